"""A follower of Nomad's event stream for benchmarks: "when did this job version appear?"

`JobEvents` keeps one `/v1/event/stream?topic=Job` connection open (from now on, no
replay) and resolves waiters with the `time.perf_counter()` at which the line carrying a
matching `JobRegistered` event arrived. Watching the stream instead of polling means no
polling interval inflates the figures: the end of each measurement is the moment a
client of Nomad could have known.

Not here: anything Shaman's watcher does (that is services/watcher); this only timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

JobPredicate = Callable[[dict[str, Any]], bool]


class JobEvents:
    def __init__(self, nomad_addr: str) -> None:
        self.addr = nomad_addr.rstrip("/")
        self.ready = asyncio.Event()
        self._waiters: list[tuple[JobPredicate, asyncio.Future[float]]] = []
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> JobEvents:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="bench-job-events")
        await asyncio.wait_for(self.ready.wait(), 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._session is not None:
            await self._session.close()

    def wait(self, predicate: JobPredicate) -> asyncio.Future[float]:
        """A future for the arrival time of the first job event whose Job matches."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return future

    async def _run(self) -> None:
        assert self._session is not None
        # An index past every existing one: only what happens from now on.
        params = {"topic": "Job", "index": str(10**12)}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._session.get(f"{self.addr}/v1/event/stream", params=params,
                                     timeout=timeout) as resp:
            buf = b""
            async for data in resp.content.iter_any():
                arrived = time.perf_counter()
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._line(line, arrived)

    def _line(self, line: bytes, arrived: float) -> None:
        if not line.strip():
            return
        envelope = json.loads(line)
        if not envelope:
            self.ready.set()  # the heartbeat Nomad sends at connect
            return
        for event in envelope.get("Events") or []:
            # JobRegistered, or the Job part of another transaction (localnomad writes an
            # auto-revert's new version in the deployment's own transaction).
            if event.get("Type") == "JobDeregistered":
                continue
            job = (event.get("Payload") or {}).get("Job") or {}
            for predicate, future in list(self._waiters):
                if not future.done() and predicate(job):
                    future.set_result(arrived)
                    self._waiters.remove((predicate, future))


def job_is(job_id: str, min_version: int = 0) -> JobPredicate:
    """JobRegistered of `job_id` at version `min_version` or later."""
    return lambda job: job.get("ID") == job_id and int(job.get("Version", -1)) >= min_version
