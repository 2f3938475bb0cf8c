"""Deploys accepted per second and SSE fan-out: the api against its floor, in one run.

One nats-server (JetStream file store, `sync_interval: always`, as devstack and production
run it), one `shaman-api` process (bench/api_bench.py's `start_api`) and one floor server
(bench/floor.py: an aiohttp handler that only publishes with ack), both on that server.
Then, alternating which goes first in each round:

- deploys accepted per second: the same load generator (bench/loadgen.py: N keep-alive
  connections, closed loop, fixed time) posting `{"image"}` deploys, each connection to its
  own app (so apps do not serialize on their record, which is latest-wins by design);
- SSE delivery: bench/api_bench.py's `bench_sse` (N raw-socket subscribers, events at a fixed
  rate, publish → socket latency) against the api and against the floor's SSE.

Not here: anything behind the accept (no builder runs: the api's work piles up in the
stream, as the floor's does).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from bench import api_bench
from bench.floor import start_floor, stop_process
from bench.loadgen import LoadResult, closed_loop
from bench.stats import median
from devstack.components.nats import NatsServer
from devstack.ports import free_port

HEADERS = {"Authorization": f"Bearer {api_bench.TOKEN}"}


async def create_apps(base: str, names: list[str]) -> None:
    async with aiohttp.ClientSession(base_url=base, headers=HEADERS) as http:
        for name in names:
            async with http.post("/v1/apps", json={"name": name}) as resp:
                if resp.status not in (201, 409):
                    raise RuntimeError(f"POST /v1/apps {name}: {resp.status} {await resp.text()}")


async def deploy_rate(base: str, concurrency: int, seconds: float, tag: str) -> LoadResult:
    def request(worker: int, n: int) -> tuple[str, Any]:
        return (f"/v1/apps/acc-{worker}/deploys",
                {"image": f"r.example.com/bench:{tag}-{worker}-{n}"})

    return await closed_loop(base, request, concurrency, seconds, HEADERS)


def _latency(sse_run: dict[str, Any]) -> dict[str, float]:
    # api_bench names it `latency_ms_sampled` since it samples ~100 subscribers.
    found = sse_run.get("latency_ms_sampled") or sse_run.get("latency_ms") or {}
    return {"p50": found.get("p50", float("nan")), "p99": found.get("p99", float("nan"))}


async def run(work: Path, quick: bool) -> dict[str, Any]:
    concurrency = 32
    seconds = 1.5 if quick else 5.0
    rounds = 2 if quick else 3
    subscribers, sse_seconds, sse_rounds = (200, 1.5, 1) if quick else (1000, 5.0, 2)
    nats = NatsServer(work / "nats", free_port(), free_port(), name="accept-nats")
    nats.start()
    api_port, floor_port = free_port(), free_port()
    procs: list[subprocess.Popen[Any]] = []
    try:
        api = await asyncio.to_thread(api_bench.start_api, nats.url, api_port, work / "api.log")
        procs.append(api)
        floor = await asyncio.to_thread(start_floor, nats.url, floor_port, None,
                                        work / "floor.log")
        procs.append(floor)
        targets = {"api": f"http://127.0.0.1:{api_port}",
                   "floor": f"http://127.0.0.1:{floor_port}"}
        await create_apps(targets["api"], [f"acc-{w}" for w in range(concurrency)])
        runs: dict[str, list[dict[str, Any]]] = {"api": [], "floor": []}
        for r in range(rounds):
            order = ("api", "floor") if r % 2 == 0 else ("floor", "api")
            for name in order:
                result = await deploy_rate(targets[name], concurrency, seconds, f"r{r}")
                runs[name].append(result.to_json())
        sse: dict[str, list[dict[str, Any]]] = {"api": [], "floor": []}
        ports = {"api": api_port, "floor": floor_port}
        for r in range(sse_rounds):
            order = ("api", "floor") if r % 2 == 0 else ("floor", "api")
            for name in order:
                sse[name].append(await api_bench.bench_sse(nats.url, ports[name], subscribers,
                                                           100.0, sse_seconds))
    finally:
        for proc in procs:
            await asyncio.to_thread(stop_process, proc)
        nats.stop()
    return {
        "concurrency": concurrency, "seconds_per_run": seconds, "rounds": rounds,
        "deploys_per_s": {k: median([x["rate_per_s"] for x in v]) for k, v in runs.items()},
        "accept_p99_ms_under_load": {
            k: median([x["latency_ms"]["p99"] for x in v]) for k, v in runs.items()},
        "runs": runs,
        "sse": {
            "subscribers": subscribers, "events_per_s": 100.0, "seconds": sse_seconds,
            "p99_ms": {k: median([_latency(x)["p99"] for x in v]) for k, v in sse.items()},
            "p50_ms": {k: median([_latency(x)["p50"] for x in v]) for k, v in sse.items()},
            "delivered": {k: min(x["delivered_ratio"] for x in v) for k, v in sse.items()},
            # The publisher shares the bench process with every subscriber socket: on a
            # loaded machine it falls behind the intended rate.
            "events_published": {k: min(x["events"] for x in v) for k, v in sse.items()},
            "events_intended": round(100.0 * sse_seconds),
            "runs": sse,
        },
    }
