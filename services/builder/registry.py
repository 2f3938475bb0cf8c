"""A small registry v2 API client: resolve a reference to a digest, list tags, delete.

Loopback registries (and those listed in `insecure_registries`) are spoken to over plain
HTTP; every other one over HTTPS. A 401 with a Bearer challenge is answered the standard
way (token from the realm, with Basic credentials when we have some), so public
registries work too when they are reachable.

Errors: a reference that does not exist → `ImageNotFound` (permanent); anything that
may pass (refused connection, timeout, 5xx, 429) → `BackendUnavailable` (retry later).
Not here: pushing (buildah does that) or reading credentials (services.builder.credentials).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

import aiohttp

from services.builder.credentials import Credential
from services.builder.references import ImageRef, is_loopback
from shared.errors import BackendUnavailable, PermanentError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)


class ImageNotFound(PermanentError):
    """The registry answered that the image (or the repository) does not exist."""


class RegistryClient:
    def __init__(self, session: aiohttp.ClientSession, insecure: Iterable[str] = ()) -> None:
        self._session = session
        self._insecure = {h.strip() for h in insecure if h.strip()}
        self._tokens: dict[tuple[str, str], str] = {}

    def plain_http(self, registry: str) -> bool:
        return is_loopback(registry) or registry in self._insecure

    def _url(self, registry: str, path: str) -> str:
        scheme = "http" if self.plain_http(registry) else "https"
        return f"{scheme}://{registry}/v2/{path}"

    async def _request(
        self,
        method: str,
        registry: str,
        path: str,
        *,
        scope: str,
        credential: Credential | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        url = self._url(registry, path)
        hdrs = dict(headers or {})
        token = self._tokens.get((registry, scope))
        for _ in range(2):
            if token:
                hdrs["Authorization"] = f"Bearer {token}"
            try:
                async with self._session.request(method, url, headers=hdrs, timeout=_TIMEOUT) as r:
                    body = await r.read()
                    status, rheaders = r.status, {k.lower(): v for k, v in r.headers.items()}
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BackendUnavailable(
                    "registry", f"{registry} did not answer: {type(exc).__name__}"
                ) from exc
            if status == 401 and token is None:
                challenge = rheaders.get("www-authenticate", "")
                token = await self._token(registry, challenge, scope, credential)
                if token is None:
                    break
                self._tokens[(registry, scope)] = token
                continue
            break
        if status >= 500 or status == 429:
            raise BackendUnavailable("registry", f"{registry} answered {status} for {path}")
        return status, rheaders, body

    async def _token(
        self, registry: str, challenge: str, scope: str, credential: Credential | None
    ) -> str | None:
        if not challenge.lower().startswith("bearer"):
            return None
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            return None
        query = {"scope": scope}
        if "service" in params:
            query["service"] = params["service"]
        auth = (
            aiohttp.BasicAuth(credential.username, credential.password) if credential else None
        )
        try:
            async with self._session.get(realm, params=query, auth=auth, timeout=_TIMEOUT) as r:
                if r.status != 200:
                    return None
                data = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BackendUnavailable("registry", f"token service of {registry} failed") from exc
        token = data.get("token") or data.get("access_token")
        return str(token) if token else None

    async def resolve(self, ref: ImageRef, credential: Credential | None = None) -> str:
        """The manifest digest (`sha256:…`) the reference names right now."""
        scope = f"repository:{ref.repository}:pull"
        path = f"{ref.repository}/manifests/{ref.reference}"
        status, headers, _ = await self._request(
            "HEAD", ref.api_host, path, scope=scope, credential=credential,
            headers={"Accept": MANIFEST_TYPES},
        )
        if status == 200 and headers.get("docker-content-digest", "").startswith("sha256:"):
            return headers["docker-content-digest"]
        if status == 200:
            # Some registries omit the header on HEAD: hash the manifest ourselves.
            status, headers, body = await self._request(
                "GET", ref.api_host, path, scope=scope, credential=credential,
                headers={"Accept": MANIFEST_TYPES},
            )
            if status == 200:
                return headers.get("docker-content-digest") or (
                    "sha256:" + hashlib.sha256(body).hexdigest()
                )
        if status in (401, 403, 404):
            raise ImageNotFound(f"image {ref} was not found in {ref.registry} ({status})")
        raise BackendUnavailable("registry", f"{ref.registry} answered {status} for {ref}")

    async def tags(self, registry: str, repository: str) -> list[str]:
        status, _, body = await self._request(
            "GET", registry, f"{repository}/tags/list?n=10000",
            scope=f"repository:{repository}:pull",
        )
        if status == 404:
            return []
        if status != 200:
            raise BackendUnavailable("registry", f"listing tags of {repository}: {status}")
        return list(json.loads(body or b"{}").get("tags") or [])

    async def delete(self, registry: str, repository: str, digest: str) -> bool:
        """Delete a manifest by digest (and with it every tag on it); False if already gone."""
        status, _, _ = await self._request(
            "DELETE", registry, f"{repository}/manifests/{digest}",
            scope=f"repository:{repository}:delete,pull",
        )
        if status in (200, 202):
            return True
        if status == 404:
            return False
        raise PermanentError(f"registry refused to delete {repository}@{digest} ({status})")
