"""Benchmark of the api service; prints one JSON object.

Run as `python -m bench.api_bench [--quick]`. Starts a nats-server and the api
(`shaman-api`, its own process) on free ports, then measures from this process:
- POST /v1/apps/{app}/deploys → 202, one at a time (p50/p99 ms), and with 32 requests
  in flight (deploys per second, over 32 apps);
- GET /v1/apps/{app}/deploys/{id} (p50/p99 ms);
- SSE fan-out: N subscribers on GET /v1/events?app=…, events published on NATS at a fixed
  rate; delivery latency from publish to each subscriber's socket (p50/p99 ms) and the
  share of events delivered to every subscriber. The subscribers live in a process of
  their own (bench/sse_subscribers.py: plain asyncio protocols, on uvloop when installed)
  so that reading 1,000 sockets does not starve the publisher.
Everything shares the machine's cores; compare medians and ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from devstack.components.nats import NatsServer
from devstack.ports import free_port
from shared.bus import connect_bus
from shared.events import DeployAccepted
from shared.settings import CommonSettings

TOKEN = "shm_bench-admin-token"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 0.5), "p99": pct(values, 0.99), "n": len(values)}


def start_api(nats_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, NATS_URL=nats_url, SHAMAN_HTTP_ADDR=f"127.0.0.1:{port}",
               SHAMAN_ADMIN_TOKEN=TOKEN, SHAMAN_LOG_LEVEL="warning",
               SHAMAN_RATE_LIMIT_PER_S="1000000", SHAMAN_RATE_LIMIT_BURST="1000000")
    bin_dir = Path(sys.executable).parent
    with log.open("wb") as out:
        proc = subprocess.Popen([str(bin_dir / "shaman-api")], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"shaman-api did not start; see {log}") from None
            time.sleep(0.05)


async def bench_requests(base: str, samples: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(base_url=base, headers=headers) as http:
        async with http.post("/v1/apps", json={"name": "bench-deploys"}) as resp:
            assert resp.status in (201, 409), await resp.text()
        accept: list[float] = []
        ids: list[str] = []
        for i in range(samples):
            t = time.perf_counter()
            async with http.post("/v1/apps/bench-deploys/deploys",
                                 json={"image": f"r.example.com/bench:{i}"}) as resp:
                body = await resp.json()
            accept.append((time.perf_counter() - t) * 1000)
            assert resp.status == 202, body
            ids.append(body["id"])
        reads: list[float] = []
        for deploy_id in ids:
            t = time.perf_counter()
            async with http.get(f"/v1/apps/bench-deploys/deploys/{deploy_id}") as resp:
                await resp.read()
            reads.append((time.perf_counter() - t) * 1000)
        # Throughput over 32 apps: deploys of one app serialize on its record (latest
        # wins), which is the point, not a cost to measure here.
        for a in range(32):
            async with http.post("/v1/apps", json={"name": f"bench-par-{a}"}) as resp:
                assert resp.status in (201, 409)
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem, http.post(f"/v1/apps/bench-par-{i % 32}/deploys",
                                      json={"image": f"r.example.com/bench:p{i}"}) as resp:
                body = await resp.read()
                assert resp.status == 202, (resp.status, body)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(samples * 2)))
        rate = samples * 2 / (time.perf_counter() - started)
    return {"deploy_accept_ms": summary(accept), "get_deploy_ms": summary(reads),
            "deploys_per_s_32_in_flight": round(rate, 1)}


async def bench_sse(nats_url: str, port: int, subscribers: int, rate: float,
                    seconds: float) -> dict[str, Any]:
    """Subscribers in their own process (bench/sse_subscribers.py); events published here."""
    app = "bench-sse"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}",
                                     headers=headers) as http, \
            http.post("/v1/apps", json={"name": app}) as resp:
        assert resp.status in (201, 409)
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sse_subscribers", "--port", str(port), "--app", app,
        "--token", TOKEN, "--subscribers", str(subscribers),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert receiver.stdin is not None and receiver.stdout is not None
    bus = await connect_bus(CommonSettings(nats_url=nats_url), "bench")  # type: ignore[call-arg]
    try:
        ready = await asyncio.wait_for(receiver.stdout.readline(), 120)
        if ready.strip() != b"ready":
            raise RuntimeError(f"bench.sse_subscribers did not start: {ready!r}")
        await asyncio.sleep(1.0)  # every client attached to the hub (answers precede attach)
        receiver.stdin.write(b"go\n")
        await receiver.stdin.drain()
        await asyncio.sleep(0.2)  # the receiver has reset its counters
        sent = 0
        interval = 1.0 / rate
        next_at = time.perf_counter()
        end = next_at + seconds
        while time.perf_counter() < end:
            await bus.publish_event(DeployAccepted(
                app=app, deploy_id="d-bench", kind="deploy",
                source=f"bench-{time.time_ns()}", requested_by="b"))
            sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        receiver.stdin.write(f"stop {sent * subscribers}\n".encode())
        await receiver.stdin.drain()
        out = await asyncio.wait_for(receiver.stdout.read(), 60)
        await receiver.wait()
        received = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
        await bus.close()
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        fanout = fanout_from_metrics(await resp.text())
    return {
        "subscribers": subscribers, "events_per_s": rate, "events": sent,
        "delivered_ratio": received["delivered_ratio"],
        "latency_ms_sampled": received["latency_ms_sampled"],
        "receiver_loop": received["loop"],
        "server_fanout_ms_per_event": fanout,
    }


def fanout_from_metrics(text: str) -> dict[str, float]:
    """p50/p99 upper bounds of the api's own fan-out histogram (write to every client)."""
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for line in text.splitlines():
        if line.startswith("shaman_api_sse_fanout_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith("shaman_api_sse_fanout_seconds_count"):
            count = float(line.split()[-1])

    def bound(q: float) -> float:
        for le, cumulative in buckets:
            if count and cumulative >= q * count:
                return round(le * 1000, 3)
        return float("nan")

    return {"p50_at_most": bound(0.5), "p99_at_most": bound(0.99), "events": count}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        nats = NatsServer(Path(tmp), free_port(), free_port(), name="bench-nats")
        nats.start()
        port = free_port()
        proc = start_api(nats.url, port, Path(tmp) / "api.log")
        try:
            requests = await bench_requests(f"http://127.0.0.1:{port}", args.samples)
            sse = await bench_sse(nats.url, port, args.subscribers, args.rate, args.seconds)
        finally:
            proc.terminate()
            proc.wait(15)
            nats.stop()
    return {"bench": "api", **requests, "sse": sse,
            "note": "api and nats in their own processes; all on the same cores"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.subscribers, args.seconds = 50, 200, 2.0
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
