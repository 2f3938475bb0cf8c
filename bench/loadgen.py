"""The HTTP load generator: N concurrent keep-alive connections for a fixed time.

One aiohttp client session with a connection limit of N and N workers, each sending its
next request as soon as the previous answer is read (closed loop). The same generator,
with the same N and duration, drives Shaman's api and the floor server, so their rates
compare. It runs in the benchmark process, on the same cores as the servers: the rates are
what one machine does end to end, not what the servers would do alone.

Not here: Debian's `wrk` (not installed on these machines; an aiohttp client is what the
handbook's floor table used too).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.stats import summary

#: (path, JSON body) of the n-th request of worker w.
RequestFactory = Callable[[int, int], tuple[str, Any]]


@dataclass
class LoadResult:
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return ok / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"rate_per_s": round(self.rate, 1), "requests": self.requests,
                "seconds": round(self.seconds, 3),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "latency_ms": summary(self.latencies_ms)}


async def closed_loop(
    base_url: str,
    request: RequestFactory,
    concurrency: int,
    duration_s: float,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """POST requests from `concurrency` workers for `duration_s`; rate counts 2xx answers."""
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector,
                                     headers=dict(headers or {})) as http:
        # One request per connection first, so connection set-up is not in the figure.
        await asyncio.gather(*(_one(http, request, w, -1, None) for w in range(concurrency)))
        started = time.perf_counter()
        end = started + duration_s

        async def worker(w: int) -> None:
            n = 0
            while time.perf_counter() < end:
                await _one(http, request, w, n, result)
                n += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


async def _one(http: aiohttp.ClientSession, request: RequestFactory, worker: int, n: int,
               result: LoadResult | None) -> None:
    path, body = request(worker, n)
    t = time.perf_counter()
    async with http.post(path, json=body) as resp:
        await resp.read()
        status = resp.status
    if result is not None:
        result.requests += 1
        result.statuses[status] += 1
        result.latencies_ms.append((time.perf_counter() - t) * 1000)
