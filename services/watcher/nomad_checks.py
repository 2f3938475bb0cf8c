"""`GET /v1/allocation/:id/checks`, which shared.nomad.NomadClient does not offer (yet).

Nomad-provider check results carry the failing check's output, the best explanation of
a release that runs but is not healthy. Read with the watcher's aiohttp session; best
effort: any failure gives [] (an explanation without check output is still useful, and
the caller must not fail a deploy's outcome over it).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from services.watcher.nomad_model import CheckResult
from shared.logging import get_logger

log = get_logger(__name__)


class AllocationChecks:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        address: str,
        *,
        token: str | None = None,
        namespace: str = "default",
        timeout_s: float = 5.0,
    ) -> None:
        self._session = session
        self._base = address.rstrip("/")
        self._headers = {"X-Nomad-Token": token} if token else {}
        self._namespace = namespace
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def get(self, alloc_id: str) -> list[CheckResult]:
        url = f"{self._base}/v1/allocation/{alloc_id}/checks"
        try:
            async with self._session.get(
                url, params={"namespace": self._namespace}, headers=self._headers,
                timeout=self._timeout,
            ) as resp:
                if resp.status != 200:
                    return []
                body: Any = msgspec.json.decode(await resp.read())
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
            log.info("allocation checks unavailable", alloc_id=alloc_id, error=repr(exc))
            return []
        if not isinstance(body, dict):
            return []
        out: list[CheckResult] = []
        for value in body.values():
            try:
                out.append(msgspec.convert(value, CheckResult, strict=False))
            except msgspec.ValidationError:
                continue
        return out
