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

from shared.logging import get_logger

log = get_logger(__name__)

_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def split_reference(image: str) -> tuple[str, str, str] | None:
    """`host[:port]/name@sha256:…` → (host, name, digest); None without a registry host."""
    if "@" not in image:
        return None
    repo, digest = image.split("@", 1)
    first, sep, rest = repo.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return None  # Docker Hub shorthand: not reachable from here, cannot tell
    return first, rest, digest


class ImageChecker:
    def __init__(self, session: aiohttp.ClientSession, local_registry: str,
                 timeout_s: float) -> None:
        self._session = session
        self._local = local_registry
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _scheme(self, host: str) -> str:
        plain = host == self._local or host.startswith(("127.", "localhost"))
        return "http" if plain else "https"

    async def exists(self, image: str) -> bool | None:
        parts = split_reference(image)
        if parts is None:
            return None
        host, name, digest = parts
        url = f"{self._scheme(host)}://{host}/v2/{name}/manifests/{digest}"
        try:
            async with self._session.head(url, headers={"Accept": _ACCEPT},
                                          timeout=self._timeout, allow_redirects=True) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("registry unreachable; the rollback is left to the scheduler's check",
                        registry=host, error=type(exc).__name__)
            return None
        if status == 200:
            return True
        if status == 404:
            return False
        log.warning("registry gave no answer about the image; the rollback is left to the "
                    "scheduler's check", registry=host, status=status)
        return None
