"""Benchmark of localnomad with the simulated runtime; prints one JSON object.

Run as `python -m bench.localnomad_bench`. Starts a localnomad process on a free port
and measures, over HTTP like a real client:
- register -> all allocations running, for count-3 jobs (p50/p99), seen on the event
  stream (so no polling interval inflates it);
- state change -> event delivered on the stream (p50/p99): from the commit of a new job
  version (its SubmitTime, same clock) to the client reading its `JobRegistered` line,
  with 20 idle subscribers attached;
- resident memory of the localnomad process with 1,000 registered jobs.
Both without and with `--data-dir` (snapshots on), in one run, plus the floor (a GET
that does nothing) so figures can be read as ratios on a noisy machine.
Targets (issue 2): register->running p50 < 20 ms, event p99 < 10 ms, < 150 MB RSS.
The machine is shared and noisy: compare medians within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from devstack.ports import free_port

MS = 1_000_000


def job(job_id: str, count: int, release: str = "1") -> dict[str, Any]:
    return {"Job": {
        "ID": job_id, "Type": "service", "Meta": {"release": release},
        "TaskGroups": [{
            "Name": "web", "Count": count,
            "Update": {"MaxParallel": 1, "MinHealthyTime": 100 * MS,
                       "HealthyDeadline": 5_000 * MS, "ProgressDeadline": 10_000 * MS},
            "Networks": [{"DynamicPorts": [{"Label": "http", "To": 8080}]}],
            "Services": [{"Name": job_id, "PortLabel": "http", "Provider": "nomad",
                          "Checks": [{"Name": "alive", "Type": "http", "Path": "/health",
                                      "Interval": 10_000 * MS, "Timeout": 2_000 * MS}]}],
            "Tasks": [{"Name": "app", "Driver": "docker",
                       "Config": {"image": "127.0.0.1:5000/bench:1", "ports": ["http"]},
                       "Resources": {"CPU": 100, "MemoryMB": 64}}],
        }]}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[idx], 3)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class StreamWatcher:
    """One event-stream connection; records arrival times of what the bench waits for."""

    def __init__(self, url: str, topics: list[str]) -> None:
        self.url = url
        self.topics = topics
        self.running: dict[str, set[str]] = {}
        self.waiters: dict[str, tuple[int, asyncio.Future[float]]] = {}
        self.job_events: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession) -> None:
        params = [("topic", t) for t in self.topics] + [("index", str(10**12))]
        async with session.get(f"{self.url}/v1/event/stream", params=params,
                               timeout=aiohttp.ClientTimeout(total=None)) as resp:
            buf = b""
            async for chunk in resp.content.iter_any():
                now = time.perf_counter()
                buf += chunk
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    env = json.loads(line)
                    if not env:
                        self.ready.set()
                        continue
                    for ev in env["Events"]:
                        self._handle(ev, now)

    def _handle(self, ev: dict[str, Any], now: float) -> None:
        if ev["Topic"] == "Allocation":
            alloc = ev["Payload"]["Allocation"]
            running = self.running.setdefault(alloc["JobID"], set())
            if alloc["ClientStatus"] == "running" and alloc["DesiredStatus"] == "run":
                running.add(alloc["ID"])
            else:
                running.discard(alloc["ID"])
            want = self.waiters.get(alloc["JobID"])
            if want and len(running) >= want[0] and not want[1].done():
                want[1].set_result(now)
        elif ev["Topic"] == "Job" and ev["Type"] == "JobRegistered":
            fut = self.job_events.get(ev["Key"])
            if fut is not None and not fut.done():
                # SubmitTime is stamped by the server in the transaction that changed the
                # job, on the same clock: arrival minus it is commit -> delivery.
                submitted = ev["Payload"]["Job"]["SubmitTime"]
                fut.set_result((time.time_ns() - submitted) / 1e6)


async def measure(url: str, pid: int, jobs_for_rss: int, samples: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        allocs = StreamWatcher(url, ["Allocation"])
        jobs = StreamWatcher(url, ["Job"])
        idle = [StreamWatcher(url, [f"Deployment:idle-{i}"]) for i in range(20)]
        tasks = [asyncio.create_task(w.run(session)) for w in [allocs, jobs, *idle]]
        await asyncio.wait_for(asyncio.gather(allocs.ready.wait(), jobs.ready.wait()), 10)
        loop = asyncio.get_running_loop()

        # Warm up code paths once.
        for i in range(5):
            async with session.post(f"{url}/v1/jobs", json=job(f"warm-{i}", 3)) as r:
                await r.read()

        # The floor on this machine right now: a request that does nothing.
        floor_ms: list[float] = []
        for _ in range(samples):
            start = time.perf_counter()
            async with session.get(f"{url}/v1/status/leader") as r:
                await r.read()
            floor_ms.append((time.perf_counter() - start) * 1000)

        register_ms: list[float] = []
        for i in range(samples):
            jid = f"reg-{i}"
            fut: asyncio.Future[float] = loop.create_future()
            allocs.waiters[jid] = (3, fut)
            start = time.perf_counter()
            async with session.post(f"{url}/v1/jobs", json=job(jid, 3)) as r:
                assert r.status == 200, await r.text()
                await r.read()
            done = await asyncio.wait_for(fut, 10)
            register_ms.append((done - start) * 1000)

        event_ms: list[float] = []
        for i in range(samples):
            jid = f"reg-{i}"
            fut2: asyncio.Future[float] = loop.create_future()
            jobs.job_events[jid] = fut2
            async with session.post(f"{url}/v1/jobs", json=job(jid, 3, release="2")) as r:
                await r.read()
            event_ms.append(await asyncio.wait_for(fut2, 10))

        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        existing = 5 + samples
        for i in range(max(0, jobs_for_rss - existing)):
            async with session.post(f"{url}/v1/jobs", json=job(f"rss-{i}", 1)) as r:
                await r.read()
        async with session.get(f"{url}/v1/jobs") as r:
            total_jobs = len(await r.json())
        await asyncio.sleep(1.0)  # let the last placements and client updates settle
        return {
            "register_to_all_running_ms": {"p50": pct(register_ms, 0.5),
                                           "p99": pct(register_ms, 0.99),
                                           "mean": round(statistics.mean(register_ms), 3),
                                           "n": len(register_ms), "count_per_job": 3},
            "state_change_to_event_ms": {"p50": pct(event_ms, 0.5), "p99": pct(event_ms, 0.99),
                                         "n": len(event_ms), "idle_subscribers": len(idle)},
            "floor_get_status_leader_ms": {"p50": pct(floor_ms, 0.5),
                                           "p99": pct(floor_ms, 0.99)},
            "rss_mb": rss_mb(pid), "jobs_registered": total_jobs,
        }


def run_one(jobs: int, samples: int, persist: bool) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ln-bench-") as tmp:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.localnomad", "--addr", f"127.0.0.1:{port}",
             "--runtime", "simulated", *(["--data-dir", tmp] if persist else [])],
            stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            ready_s = time.perf_counter() - started
            if "localnomad ready" not in line:
                raise SystemExit(f"localnomad did not start: {line!r}")
            result = asyncio.run(measure(f"http://127.0.0.1:{port}", proc.pid, jobs, samples))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    result["startup_to_ready_s"] = round(ready_s, 3)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000, help="jobs registered for the RSS figure")
    p.add_argument("--samples", type=int, default=200)
    a = p.parse_args(argv)
    plain = run_one(a.jobs, a.samples, persist=False)
    persisted = run_one(a.jobs, a.samples, persist=True)
    targets = {"register_p50_ms": 20, "event_p99_ms": 10, "rss_mb": 150}

    def meets(r: dict[str, Any]) -> bool:
        return bool(r["register_to_all_running_ms"]["p50"] < targets["register_p50_ms"]
                    and r["state_change_to_event_ms"]["p99"] < targets["event_p99_ms"]
                    and r["rss_mb"] < targets["rss_mb"])

    print(json.dumps({
        "simulated": plain, "simulated_with_data_dir": persisted, "targets": targets,
        "meets_targets": {"simulated": meets(plain),
                          "simulated_with_data_dir": meets(persisted)},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
