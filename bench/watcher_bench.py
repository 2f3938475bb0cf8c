"""Watcher benchmark: detection latency against polling, and event decoding throughput.

    python -m bench.watcher_bench [--trials 20] [--quick]

Starts its own nats-server and localnomad (simulated runtime) on free ports, and one
watcher in this process, then:
1. per trial, an app whose new release hangs (so Nomad leaves the deployment running),
   seeded as the api and scheduler would; once the watcher has seen the rollout, the
   bench marks the deployment failed through Nomad's API (t0) and measures until the
   `Rollback` command appears on `shaman.work.release.<app>`: p50/p99. In the same
   trial two python-nomad pollers (`GET /v1/deployment/:id` every 1 s and every 5 s,
   started at a random phase, as a poller would be) measure when they would have noticed
   the failure; the ratios compare those with the watcher;
2. the event stream's NDJSON lines recorded during the run (Nomad's real envelopes)
   decoded and mapped to apps the way the watcher does (shared.nomad's Envelope decoder +
   `apps_to_reconcile`), repeated to a few hundred thousand events: events per second.
Prints one JSON object. The machine is shared: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import nomad

from devstack.components.localnomad import LocalNomad
from devstack.components.nats import NatsServer
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from services.watcher.app import create_app
from services.watcher.checkpoint import StreamPosition
from services.watcher.stream import TOPICS, apps_to_reconcile
from shared import subjects
from shared.bus import TypedKV, connect_bus, provision
from shared.events.base import now
from shared.logging import configure_logging
from shared.nomad.event_stream import Envelope
from shared.records import AppRecord, AppSpec, DeployRecord, StatusChange
from shared.settings import CommonSettings, WatcherSettings

S = 1_000_000_000


def job(app: str, deploy_id: str) -> dict[str, Any]:
    return {
        "ID": app, "Name": app, "Type": "service", "Datacenters": ["*"],
        "Meta": {"shaman_app": app, "shaman_release": "2", "shaman_deploy_id": deploy_id},
        "TaskGroups": [{
            "Name": "web", "Count": 1,
            "Networks": [{"DynamicPorts": [{"Label": "http", "To": 8080}]}],
            "Update": {"MaxParallel": 1, "HealthCheck": "task_states",
                       "MinHealthyTime": int(0.2 * S), "HealthyDeadline": 300 * S,
                       "ProgressDeadline": 600 * S, "AutoRevert": False},
            "Tasks": [{"Name": "app", "Driver": "docker",
                       "Config": {"image": f"registry.local/{app}@sha256:{2:064d}",
                                  "ports": ["http"]},
                       "Env": {"PORT": "8080"}, "Resources": {"CPU": 100, "MemoryMB": 64}}],
        }],
    }


def control(addr: str, path: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{addr}/_localnomad/{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5):
        pass


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"p50": round(pct(ms, 0.5), 1), "p99": round(pct(ms, 0.99), 1), "n": len(ms),
            "mean": round(statistics.fmean(ms), 1) if ms else float("nan")}


class Poller(threading.Thread):
    """GET /v1/deployment/:id every `interval_s`, from a random phase; when is `failed` seen?"""

    def __init__(self, addr: str, deployment_id: str, interval_s: float, phase_s: float) -> None:
        super().__init__(daemon=True)
        self.client = nomad.Nomad(address=addr, timeout=5)
        self.deployment_id = deployment_id
        self.interval_s = interval_s
        self.phase_s = phase_s
        self.seen_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        next_poll = time.perf_counter() + self.phase_s
        while not self.stop.is_set():
            self.stop.wait(max(0.0, next_poll - time.perf_counter()))
            if self.stop.is_set():
                return
            dep = self.client.deployment.get_deployment(self.deployment_id)
            if dep.get("Status") == "failed":
                self.seen_at = time.perf_counter()
                return
            next_poll += self.interval_s


async def wait_until(check: Any, timeout: float) -> Any:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.005)
    raise TimeoutError("condition not met")


async def latency(nats_url: str, nomad_addr: str, trials: int) -> dict[str, Any]:
    watcher_s: list[float] = []
    poll: dict[float, list[float]] = {1.0: [], 5.0: []}
    settings = WatcherSettings(  # type: ignore[call-arg]
        nats_url=nats_url, nomad_addr=nomad_addr, http_addr="127.0.0.1:0",
        log_level="warning", fail_fast_restarts=1000, deadline_grace_s=3600,
        relist_interval_s=60,
    )
    client = nomad.Nomad(address=nomad_addr, timeout=5)
    async with AsyncExitStack() as stack:
        bus = await connect_bus(CommonSettings(nats_url=nats_url), "bench")  # type: ignore[call-arg]
        stack.push_async_callback(bus.close)
        await provision(bus.js)
        apps = TypedKV(await bus.js.key_value(subjects.KV_APPS), AppRecord)
        deploys = TypedKV(await bus.js.key_value(subjects.KV_DEPLOYS), DeployRecord)
        await stack.enter_async_context(create_app(settings))
        nc = await nats.connect(nats_url)
        stack.push_async_callback(nc.close)
        for i in range(trials):
            app, deploy_id = f"bench{i}", f"d-bench{i}"
            await apps.create(app, AppRecord(spec=AppSpec(name=app), last_healthy_release=1,
                                             current_release=2, active_deploy_id=deploy_id))
            await deploys.create(deploy_id, DeployRecord(
                id=deploy_id, app=app, kind="deploy", status="deploying", release=2,
                history=[StatusChange(status="deploying", time=now())]))
            control(nomad_addr, "behaviors", {"job": app, "hang": True})
            progress = asyncio.Event()
            command = asyncio.Event()
            got: dict[str, float] = {}

            async def on_progress(_msg: Any, ev: asyncio.Event = progress) -> None:
                ev.set()

            async def on_command(_msg: Any, ev: asyncio.Event = command,
                                 out: dict[str, float] = got) -> None:
                out.setdefault("at", time.perf_counter())
                ev.set()

            s1 = await nc.subscribe(subjects.event_subject(app, "rollout.progress"),
                                    cb=on_progress)
            s2 = await nc.subscribe(subjects.release_work_subject(app), cb=on_command)
            await asyncio.to_thread(client.job.register_job, app, {"Job": job(app, deploy_id)})
            await asyncio.wait_for(progress.wait(), 20)
            dep = await asyncio.to_thread(client.job.get_deployment, app)
            pollers = [Poller(nomad_addr, dep["ID"], p, random.uniform(0, p)) for p in poll]
            for p in pollers:
                p.start()
            await asyncio.sleep(0.05)  # pollers running at their phase before the failure
            t0 = time.perf_counter()
            await asyncio.to_thread(client.deployment.fail_deployment, dep["ID"])
            await asyncio.wait_for(command.wait(), 20)
            watcher_s.append(got["at"] - t0)
            for p in pollers:
                await asyncio.to_thread(p.join, 10)
                if p.seen_at is not None:
                    poll[p.interval_s].append(p.seen_at - t0)
            await s1.unsubscribe()
            await s2.unsubscribe()
            with suppress(Exception):
                await asyncio.to_thread(client.job.deregister_job, app, purge=True)
    w = summary_ms(watcher_s)
    p1, p5 = summary_ms(poll[1.0]), summary_ms(poll[5.0])
    return {
        "fail_to_rollback_command_ms": w,
        "poll_1s_detect_ms": p1,
        "poll_5s_detect_ms": p5,
        "ratio_poll_1s_to_watcher_p50": round(p1["p50"] / w["p50"], 1) if w["p50"] else None,
        "ratio_poll_5s_to_watcher_p50": round(p5["p50"] / w["p50"], 1) if w["p50"] else None,
    }


async def record_lines(nomad_addr: str, seconds: float = 1.0) -> list[bytes]:
    """Nomad's buffered envelopes as raw NDJSON lines (heartbeats dropped)."""
    params = [("index", "0"), ("namespace", "default"), *(("topic", t) for t in TOPICS)]
    lines: list[bytes] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_read=seconds)
    async with aiohttp.ClientSession() as session, session.get(
        f"{nomad_addr}/v1/event/stream", params=params, timeout=timeout
    ) as resp:
        buf = b""
        with suppress(TimeoutError, aiohttp.ServerTimeoutError):
            async for chunk in resp.content.iter_any():
                buf += chunk
                *complete, buf = buf.split(b"\n")
                lines += [line for line in complete if line.strip() not in (b"", b"{}")]
    return lines


def decode_and_map(lines: list[bytes], min_events: int) -> dict[str, Any]:
    decoder = msgspec.json.Decoder(Envelope)
    per_pass = sum(len(decoder.decode(line).Events) for line in lines)
    passes = max(1, -(-min_events // max(1, per_pass)))
    sizes = sorted(len(line) for line in lines)
    best = 0.0
    for _ in range(3):
        position = StreamPosition()
        index_shift = 0
        started = time.perf_counter()
        events = 0
        for _ in range(passes):
            for line in lines:
                envelope = decoder.decode(line)
                # fresh indexes each pass, so nothing is skipped as a replay
                envelope = Envelope(Index=envelope.Index + index_shift, Events=[
                    msgspec.structs.replace(e, Index=e.Index + index_shift)
                    for e in envelope.Events])
                apps_to_reconcile(envelope, position)
                events += len(envelope.Events)
            index_shift += 1_000_000
        elapsed = time.perf_counter() - started
        best = max(best, events / elapsed)
    return {
        "decode_map_events_per_s": round(best),
        "decode_map_events": per_pass * passes,
        "decode_map_line_bytes_p50": sizes[len(sizes) // 2] if sizes else 0,
        "decode_map_line_bytes_max": sizes[-1] if sizes else 0,
    }


async def run(trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp:
        home = Path(tmp)
        nats_server = NatsServer(home / "nats", free_port(), free_port())
        localnomad = LocalNomad(home / "ln", free_port(), runtime="simulated",
                                storage=ContainerStorage(home / "containers"))
        nats_server.start()
        try:
            localnomad.start()
            try:
                result = await latency(nats_server.url, localnomad.addr, trials)
                lines = await record_lines(localnomad.addr)
                result.update(decode_and_map(lines, 200_000))
            finally:
                localnomad.stop()
        finally:
            nats_server.stop()
    result["trials"] = trials
    result["targets"] = {"decode_map_events_per_s": "> 10000"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 trials")
    args = parser.parse_args(argv)
    trials = 5 if args.quick else args.trials
    configure_logging("warning", "console", "watcher-bench")
    print(json.dumps(asyncio.run(run(trials))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
