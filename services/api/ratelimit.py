"""A per-token rate limit: one token bucket per API token, in this process's memory.

Each api copy limits on its own, so N copies allow up to N times the rate; that is the
documented trade for needing no shared state on every request. Buckets of tokens not
seen for a while are dropped so the map stays bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = max(rate_per_s, 1e-6)
        self.burst = max(burst, 1)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float | None = None) -> Decision:
        t = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(t)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=t)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (t - bucket.updated) * self.rate)
            bucket.updated = t
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Decision(True, int(bucket.tokens), 0.0)
        return Decision(False, 0, (1.0 - bucket.tokens) / self.rate)

    def _evict(self, now: float) -> None:
        # A bucket that has refilled completely is indistinguishable from a new one.
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for key in oldest[: len(oldest) // 2]:
                del self._buckets[key]
