"""Which team an app belongs to, cached for a few seconds for the SSE fan-out.

Only the event stream uses this (one lookup per event, not per client); every other
authorisation decision reads the app record fresh.
"""

from __future__ import annotations

import time

from shared.bus.kv import TypedKV
from shared.records import AppRecord


class TeamCache:
    def __init__(self, apps: TypedKV[AppRecord], ttl_s: float = 5.0) -> None:
        self.apps = apps
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def team_of(self, app: str) -> str | None:
        hit = self._cache.get(app)
        t = time.monotonic()
        if hit is not None and hit[1] > t:
            return hit[0]
        try:
            entry = await self.apps.get(app)
        except Exception:
            return hit[0] if hit else None
        team = entry.value.spec.team if entry is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[app] = (team, t + self.ttl_s)
        return team
