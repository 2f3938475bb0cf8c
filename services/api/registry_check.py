"""Is a release's image still in its registry? Asked before a rollback is accepted.

A rollback to a release whose image was garbage-collected would be accepted, queued and
then failed by the scheduler (or worse, by every allocation's pull). Asking the registry
first (`HEAD /v2/<name>/manifests/<digest>`, OCI distribution spec) lets the api refuse
it with a 422 naming `version` before anything is written.

Answers: True (the manifest is there), False (the registry says 404), None (cannot
tell: no registry host in the reference, credentials wanted, registry unreachable or
failing). None lets the rollback through: the scheduler checks again, with retries, so
a flaky registry never blocks an emergency rollback here.

The platform's registry (settings.registry), 127.* and localhost are spoken to over
plain HTTP, as the devstack runs them; everything else over HTTPS.
"""

from __future__ import annotations

import aiohttp

from shared.errors import BackendUnavailable
from shared.logging import get_logger
from shared.registry import RegistryChecker, split_reference

log = get_logger(__name__)

__all__ = ["ImageChecker", "split_reference"]


class ImageChecker:
    """shared.registry's check, lenient: what the registry cannot answer is None."""

    def __init__(self, session: aiohttp.ClientSession, local_registry: str,
                 timeout_s: float) -> None:
        self._checker = RegistryChecker(session, local_registry, timeout_s)

    async def exists(self, image: str) -> bool | None:
        try:
            return await self._checker.image_exists(image)
        except BackendUnavailable as exc:
            log.warning("registry gave no answer; the rollback is left to the scheduler's "
                        "check", error=exc.detail)
            return None
