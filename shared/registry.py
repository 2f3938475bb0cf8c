"""Does an image digest still exist in its registry? (Checked before a rollback, by the
api when it is asked for one and by the scheduler when it makes one.)

A rollback to a release whose image was garbage-collected would only fail later, on
every allocation, with a pull error; asking the registry first (`HEAD
/v2/<name>/manifests/<digest>`, OCI distribution spec) fails the rollback at once with
a clear reason.

Answers: True (the manifest is there), False (the registry says 404), None (cannot
tell: no registry host in the reference, or the registry wants credentials we do not
have). An unreachable registry or a 5xx is a TemporaryError: the command is retried.

The local registry (settings.registry, 127.0.0.1, localhost) is spoken to over plain
HTTP, as the devstack runs it; everything else over HTTPS.
"""

from __future__ import annotations

import aiohttp

from shared.errors import BackendUnavailable
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


class RegistryChecker:
    def __init__(self, session: aiohttp.ClientSession, local_registry: str,
                 timeout_s: float = 5.0) -> None:
        self._session = session
        self._local = local_registry
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _scheme(self, host: str) -> str:
        plain = host == self._local or host.startswith(("127.", "localhost"))
        return "http" if plain else "https"

    async def image_exists(self, image: str) -> bool | None:
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
            raise BackendUnavailable("registry", f"{host}: {type(exc).__name__}") from exc
        if status == 200:
            return True
        if status == 404:
            return False
        if status in (401, 403):
            log.warning("registry check not authorised; assuming the image exists",
                        registry=host, image=image, status=status)
            return None
        raise BackendUnavailable("registry", f"{host} answered HTTP {status} for {name}")
