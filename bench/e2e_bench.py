"""The whole stack on localnomad's simulated runtime, each figure beside its floor.

Starts the devstack (`devstack.stack.Stack`: nats-server, OpenBao dev, registry, localnomad
`--runtime simulated`, and the four services as their own processes) on free ports in a
temporary home, and the floor server (bench/floor.py) on the same nats-server, registry
and localnomad. Then:

1. **RSS idle** of api, builder, scheduler, watcher and localnomad (VmRSS through the
   stack's pid files), against a bare interpreter with the same libraries imported;
2. **POST /deploys → job registered in Nomad** (p50/p99), one deploy at a time, each to a
   fresh app, the end being the arrival of the job's event on Nomad's event stream;
   interleaved with the floor pipeline (accept → JetStream → resolve digest → JetStream →
   register), which does the same hops with no logic;
3. **a burst**: many apps deployed at once, POST → every job registered (deploys/s), Shaman
   and floor; RSS of each process sampled during Shaman's burst (**RSS under load**);
4. **failure → rollback job registered in Nomad** (p50/p99), with the watcher and the
   scheduler running: an app's healthy release, then a release that hangs; the bench fails
   its Nomad deployment (t0) and waits for the rollback's job version on the event stream.
   Floor: the floor's reactor (event stream → JetStream → revert to the stable version).
   Beside each Shaman trial, bench/watcher_bench.py's `Poller`s poll the deployment every
   1 s and 5 s, as a polling watcher would (detection alone, no rollback: pessimistic for us);
5. **watcher events/s**: bench/watcher_bench.py's `record_lines` + `decode_and_map` on the
   envelopes this run produced, against decoding them alone.

Not here: real containers (bench/restore_bench.py), builds (bench/builder_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import nats

from bench import api_bench, watcher_bench
from bench.floor import ROLLBACK_JOB_PREFIX, floor_job, start_floor, stop_process
from bench.nomad_events import JobEvents, job_is
from bench.rss import RssSampler, bare_python_rss_mb, rss_mb
from bench.stats import summary
from bench.tiny_image import push_tiny_image
from devstack.components.openbao import write_private
from devstack.ports import free_port
from devstack.stack import ALL_COMPONENTS, Stack, StackConfig
from shared import subjects
from shared.nomad.event_stream import Envelope

PROCESSES = ("api", "builder", "scheduler", "watcher", "localnomad")
HEADERS = {"Authorization": f"Bearer {api_bench.TOKEN}"}
# Apps whose releases must go healthy fast: the bench waits for it before failing the next.
FAST_ROLLOUT = {"min_healthy_time_s": 0.2, "healthy_deadline_s": 300.0,
                "progress_deadline_s": 600.0}
FAST_HEALTH = {"path": "/health", "interval_s": 1.0, "timeout_s": 1.0}


def note(message: str, started: float) -> None:
    print(f"bench e2e: {message} at {time.perf_counter() - started:.1f}s", file=sys.stderr,
          flush=True)


async def wait_until(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


class Clients:
    """HTTP to the api, the floor and Nomad, and a NATS connection, for one run."""

    def __init__(self, api: str, floor: str, nomad: str, registry: str) -> None:
        self.api_url, self.floor_url, self.nomad, self.registry = api, floor, nomad, registry
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))

    async def close(self) -> None:
        await self.http.close()

    async def call(self, method: str, url: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.request(method, url, json=body, headers=headers) as resp:
            data = await resp.read()
            try:
                return resp.status, msgspec.json.decode(data) if data else None
            except msgspec.DecodeError:
                return resp.status, data.decode(errors="replace")

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.call(method, self.api_url + path, body, HEADERS)
        if status >= 300 and not (status == 409 and path == "/v1/apps"):
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return data

    async def nomad_call(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.call(method, self.nomad + path, body)
        if status >= 300:
            raise RuntimeError(f"nomad {method} {path}: {status} {data}")
        return data

    async def create_app(self, name: str, fast: bool = False) -> None:
        body: dict[str, Any] = {"name": name, "image": f"{self.registry}/bench"}
        if fast:
            body |= {"rollout": FAST_ROLLOUT, "health": FAST_HEALTH}
        await self.api("POST", "/v1/apps", body)

    async def deploy(self, app: str, image: str) -> str:
        return str((await self.api("POST", f"/v1/apps/{app}/deploys", {"image": image}))["id"])

    async def floor_deploy(self, app: str, image: str) -> str:
        status, data = await self.call("POST", f"{self.floor_url}/v1/apps/{app}/deploys",
                                       {"image": image})
        if status != 202:
            raise RuntimeError(f"floor deploy: {status} {data}")
        return str(data["id"])

    async def deploy_status(self, app: str, deploy_id: str) -> str:
        return str((await self.api("GET", f"/v1/apps/{app}/deploys/{deploy_id}"))["status"])

    async def latest_deployment(self, job: str) -> dict[str, Any] | None:
        status, data = await self.call("GET", f"{self.nomad}/v1/job/{job}/deployment")
        return data if status == 200 and isinstance(data, dict) else None


# -- 1. the stack ----------------------------------------------------------------------------------


def start_stack(home: Path) -> Stack:
    """Every component, simulated runtime, free ports; the api trusts the bench's token."""
    config = StackConfig.for_tests(home, components=ALL_COMPONENTS, runtime="simulated",
                                   openbao_mode="dev", seed_images=False)
    home.mkdir(parents=True, exist_ok=True)
    write_private(config.admin_token_path, api_bench.TOKEN + "\n")
    # The services inherit the bench's environment under their contract variables: lift the
    # api's per-token rate limit, which is for people, not for a load generator.
    os.environ["SHAMAN_RATE_LIMIT_PER_S"] = "1000000"
    os.environ["SHAMAN_RATE_LIMIT_BURST"] = "1000000"
    stack = Stack(config)
    stack.up_or_raise()
    return stack


def nats_admin_url(config: StackConfig) -> str:
    """The stack's NATS URL, logged in as its admin user when the stack has NATS users."""
    passwords = getattr(config, "nats_password", None)
    if passwords is None:
        return config.nats_url
    try:
        password = passwords("admin")
    except KeyError:
        return config.nats_url
    return f"nats://admin:{quote(password, safe='')}@{config.host}:{config.ports['nats']}"


def pids(stack: Stack) -> dict[str, int]:
    found = {}
    for name in PROCESSES:
        pid = stack.component(name).pid()
        if pid is not None:
            found[name] = pid
    return found


# -- 2. one deploy, POST → job registered ----------------------------------------------------------


async def control_plane(c: Clients, events: JobEvents, image: str, samples: int,
                        tag: str) -> dict[str, Any]:
    shaman: list[float] = []
    floor: list[float] = []
    for i in range(samples):
        app = f"cp{tag}-{i}"
        await c.create_app(app)
        for side in (("shaman", "floor") if i % 2 == 0 else ("floor", "shaman")):
            job = app if side == "shaman" else f"fl{tag}-{i}"
            arrived = events.wait(job_is(job))
            started = time.perf_counter()
            if side == "shaman":
                await c.deploy(app, image)
            else:
                await c.floor_deploy(job, image)
            done = await asyncio.wait_for(arrived, 60)
            (shaman if side == "shaman" else floor).append((done - started) * 1000)
    return {"shaman_ms": summary(shaman), "floor_ms": summary(floor),
            "samples_ms": {"shaman": shaman, "floor": floor}}


STAGES = (("api", "deploy accepted"), ("builder", "build started"),
          ("builder", "build succeeded"), ("scheduler", "release created"),
          ("scheduler", "rollout submitted"))


def stage_breakdown(logs: Path, apps: set[str]) -> dict[str, float]:
    """Median ms between the services' log lines of each deploy: where the time goes.

    The services log these steps (JSON lines, one clock) as they pass them; the gaps are
    the hops between them (JetStream delivery, the next service's work).
    """
    seen: dict[str, dict[str, datetime]] = {}
    for service in {svc for svc, _ in STAGES}:
        path = logs / f"{service}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            app, event = record.get("app"), record.get("event")
            if app in apps and (service, event) in STAGES:
                at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
                seen.setdefault(app, {}).setdefault(event, at)
    out: dict[str, float] = {}
    for (_, first), (_, second) in itertools.pairwise(STAGES):
        gaps = [(marks[second] - marks[first]).total_seconds() * 1000
                for marks in seen.values() if first in marks and second in marks]
        if gaps:
            out[f"{first} -> {second}"] = round(statistics.median(gaps), 1)
    return out


# -- 3. a burst ------------------------------------------------------------------------------------


async def burst(c: Clients, events: JobEvents, image: str, apps: int, concurrency: int,
                side: str, tag: str) -> float:
    names = [f"b{tag}{side[0]}-{i}" for i in range(apps)]
    if side == "shaman":
        sem = asyncio.Semaphore(8)

        async def make(name: str) -> None:
            async with sem:
                await c.create_app(name)

        await asyncio.gather(*(make(n) for n in names))
    arrivals = [events.wait(job_is(n)) for n in names]
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with sem:
            if side == "shaman":
                await c.deploy(name, image)
            else:
                await c.floor_deploy(name, image)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in names))
    done = await asyncio.wait_for(asyncio.gather(*arrivals), 180)
    return apps / (max(done) - started)


# -- 4. failure → rollback registered --------------------------------------------------------------


async def control(c: Clients, path: str, body: dict[str, Any]) -> None:
    status, data = await c.call("POST", f"{c.nomad}/_localnomad/{path}", body)
    if status >= 300:
        raise RuntimeError(f"localnomad control {path}: {status} {data}")


async def running_deployment(c: Clients, job: str, version: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        dep = await c.latest_deployment(job)
        if dep and dep.get("JobVersion") == version and dep.get("Status") == "running":
            return dep
        return None

    result: dict[str, Any] = await wait_until(check, 60, f"{job} v{version} deployment")
    return result


async def shaman_rollback_trial(c: Clients, events: JobEvents, nc: Any, image: str, app: str,
                                poll_intervals: tuple[float, ...]) -> dict[str, Any]:
    await c.create_app(app, fast=True)
    first = await c.deploy(app, image)
    await wait_until(lambda: _is(c.deploy_status(app, first), "healthy"), 60,
                     f"{app} first release healthy")
    # The second release never starts (job version 1), so its deployment stays running.
    await control(c, "behaviors", {"job": app, "job_version": 1, "hang": True})
    progress = asyncio.Event()

    async def on_progress(_msg: Any) -> None:
        progress.set()

    sub = await nc.subscribe(subjects.event_subject(app, "rollout.progress"), cb=on_progress)
    try:
        second = await c.deploy(app, image)
        dep = await running_deployment(c, app, 1)
        await wait_until(lambda: _is(c.deploy_status(app, second), "deploying"), 30,
                         f"{app} second deploy deploying")
        await asyncio.wait_for(progress.wait(), 30)  # the watcher follows this rollout
    finally:
        await sub.unsubscribe()
    pollers = [watcher_bench.Poller(c.nomad, dep["ID"], p, random.uniform(0, p))
               for p in poll_intervals]
    for poller in pollers:
        poller.start()
    await asyncio.sleep(0.05)  # pollers running at their phase before the failure
    arrived = events.wait(job_is(app, min_version=2))
    t0 = time.perf_counter()
    await c.nomad_call("POST", f"/v1/deployment/fail/{dep['ID']}", {"DeploymentID": dep["ID"]})
    done = await asyncio.wait_for(arrived, 60)
    polled: dict[str, float | None] = {}
    for poller in pollers:
        await asyncio.to_thread(poller.join, poller.interval_s + 10)
        poller.stop.set()
        seen = poller.seen_at
        polled[f"{poller.interval_s:g}"] = None if seen is None else (seen - t0) * 1000
    return {"ms": (done - t0) * 1000, "poll_ms": polled}


async def floor_rollback_trial(c: Clients, events: JobEvents, image: str, job: str) -> float:
    await c.nomad_call("POST", "/v1/jobs", floor_job(job, "v0", image))

    async def stable() -> bool:
        dep = await c.latest_deployment(job)
        return bool(dep and dep.get("Status") == "successful")

    await wait_until(stable, 60, f"{job} v0 successful")
    await control(c, "behaviors", {"job": job, "job_version": 1, "hang": True})
    await c.nomad_call("POST", "/v1/jobs", floor_job(job, "v1", image))
    dep = await running_deployment(c, job, 1)
    arrived = events.wait(job_is(job, min_version=2))
    t0 = time.perf_counter()
    await c.nomad_call("POST", f"/v1/deployment/fail/{dep['ID']}", {"DeploymentID": dep["ID"]})
    done = await asyncio.wait_for(arrived, 60)
    return (done - t0) * 1000


async def _is(status: Awaitable[str], want: str) -> bool:
    value = await status
    if value in ("failed", "rolled_back", "cancelled", "superseded") and value != want:
        raise RuntimeError(f"deploy ended {value} while waiting for {want}")
    return value == want


async def rollbacks(c: Clients, events: JobEvents, nc: Any, image: str, trials: int,
                    poll_intervals: tuple[float, ...]) -> dict[str, Any]:
    shaman: list[float] = []
    floor: list[float] = []
    polled: dict[str, list[float]] = {f"{p:g}": [] for p in poll_intervals}
    for i in range(trials):
        result = await shaman_rollback_trial(c, events, nc, image, f"rb-{i}", poll_intervals)
        shaman.append(result["ms"])
        for key, value in result["poll_ms"].items():
            if value is not None:
                polled[key].append(value)
        floor.append(await floor_rollback_trial(c, events, image, f"{ROLLBACK_JOB_PREFIX}{i}"))
    return {"shaman_ms": summary(shaman), "floor_ms": summary(floor),
            "poll_detect_ms": {f"every_{k}s": summary(v) for k, v in polled.items()},
            "samples_ms": {"shaman": shaman, "floor": floor}}


# -- 5. the watcher's decoding ---------------------------------------------------------------------


def decode_only(lines: list[bytes], min_events: int) -> float:
    """Events/s of decoding the same lines the same way, without mapping them to apps."""
    decoder = msgspec.json.Decoder(Envelope)
    per_pass = sum(len(decoder.decode(line).Events) for line in lines)
    passes = max(1, -(-min_events // max(1, per_pass)))
    best = 0.0
    for _ in range(3):
        shift = 0
        started = time.perf_counter()
        events = 0
        for _ in range(passes):
            for line in lines:
                envelope = decoder.decode(line)
                # the same re-indexing decode_and_map does, so only the mapping differs
                envelope = Envelope(Index=envelope.Index + shift, Events=[
                    msgspec.structs.replace(e, Index=e.Index + shift) for e in envelope.Events])
                events += len(envelope.Events)
            shift += 1_000_000
        best = max(best, events / (time.perf_counter() - started))
    return best


def decode_rounds(lines: list[bytes], min_events: int, rounds: int = 3) -> dict[str, Any]:
    """decode_and_map and decode_only in alternation, the best of each: the machine's load
    drifts over seconds, so two long runs one after the other would not compare."""
    best: dict[str, Any] = {}
    only = 0.0
    for _ in range(rounds):
        mapped = watcher_bench.decode_and_map(lines, max(1, min_events // rounds))
        if mapped["decode_map_events_per_s"] > best.get("decode_map_events_per_s", 0):
            best = mapped
        only = max(only, decode_only(lines, max(1, min_events // rounds)))
    best["decode_only_events_per_s"] = round(only)
    return best


# -- the run ---------------------------------------------------------------------------------------


async def measure(stack: Stack, work: Path, quick: bool) -> dict[str, Any]:
    config = stack.config
    registry = config.registry
    await asyncio.to_thread(push_tiny_image, registry, "bench", "1")
    image = f"{registry}/bench:1"
    floor_port = free_port()
    nats_url = nats_admin_url(config)
    floor = await asyncio.to_thread(start_floor, nats_url, floor_port, config.nomad_addr,
                                    work / "floor.log")
    c = Clients(config.api_url, f"http://127.0.0.1:{floor_port}", config.nomad_addr, registry)
    nc = await nats.connect(nats_url)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        procs = pids(stack)
        out["pids"] = procs
        async with JobEvents(config.nomad_addr) as events:
            # Warm both paths once (first-use imports, connections) outside the figures.
            await control_plane(c, events, image, 1, "w")
            await asyncio.sleep(1.0)
            out["rss_idle_mb"] = {name: rss_mb(pid) for name, pid in procs.items()}
            out["rss_floor_mb"] = await asyncio.to_thread(bare_python_rss_mb)
            note("control plane", t0)
            samples = 5 if quick else 30
            out["control_plane"] = await control_plane(c, events, image, samples, "")
            out["control_plane"]["stages_ms_median"] = stage_breakdown(
                config.home / "logs", {f"cp-{i}" for i in range(samples)})
            note("burst", t0)
            apps, concurrency = (10, 5) if quick else (100, 20)
            with RssSampler(procs) as sampler:
                shaman_rate = await burst(c, events, image, apps, concurrency, "shaman", "")
            floor_rate = await burst(c, events, image, apps, concurrency, "floor", "")
            out["burst"] = {"apps": apps, "concurrency": concurrency,
                            "shaman_deploys_per_s": round(shaman_rate, 1),
                            "floor_deploys_per_s": round(floor_rate, 1)}
            out["rss_load_mb"] = dict(sampler.peak)
            note("rollbacks", t0)
            polls = (1.0,) if quick else (1.0, 5.0)
            out["rollback"] = await rollbacks(c, events, nc, image, 1 if quick else 30, polls)
        note("watcher decoding", t0)
        lines = await watcher_bench.record_lines(config.nomad_addr)
        out["watcher_decode"] = await asyncio.to_thread(
            decode_rounds, lines, 6_000 if quick else 200_000)
    finally:
        await nc.close()
        await c.close()
        await asyncio.to_thread(stop_process, floor)
    return out


async def run(work: Path, quick: bool) -> dict[str, Any]:
    stack: Stack | None = None
    started = time.perf_counter()
    try:
        stack = await asyncio.to_thread(start_stack, work / "home")
        up_s = time.perf_counter() - started
        note("stack up", started)
        result = await measure(stack, work, quick)
        result["stack_up_s"] = round(up_s, 2)
        return result
    finally:
        if stack is not None:
            note("measured; stopping the stack", started)
            with contextlib.suppress(Exception):
                # Quick runs do not wait for graceful drains (nothing is in flight by now).
                await asyncio.to_thread(stack.down, 3.0 if quick else None)
            note("stack down", started)
        for name in ("SHAMAN_RATE_LIMIT_PER_S", "SHAMAN_RATE_LIMIT_BURST"):
            os.environ.pop(name, None)
