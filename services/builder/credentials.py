"""The builder's own credentials (private git remotes, registries), read from Vault.

Paths, under the KV v2 mount `vault_mount`: `<builder_vault_path>/git/<host>` and
`<builder_vault_path>/registry/<host>`, each holding `username` and `password` (a token
works as the password). Nothing comes from the build request and nothing is cached
across builds, so a rotated credential is used from the next build on.

Values stay in memory: they are handed to git through its environment (never argv),
to buildah/skopeo through a 0600 auth file that lives only for the build, and to the
`Scrubber` so that no output can echo them. `Credential.__repr__` hides the password.
Without a Vault token (local development) there are no credentials and public/local
sources work as before. The app's own secrets are never read here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from shared.errors import SecretsUnavailable
from shared.logging import get_logger
from shared.settings import BuilderSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)


class CredentialStore:
    """Reads credentials on demand; `None` when Vault has none for that host."""

    def __init__(self, settings: BuilderSettings) -> None:
        self._settings = settings
        token = settings.vault_token.get_secret_value() if settings.vault_token else None
        self._client: hvac.Client | None = (
            hvac.Client(url=settings.vault_addr, token=token, timeout=5) if token else None
        )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    async def git(self, host: str) -> Credential | None:
        return await self._read(f"{self._settings.builder_vault_path}/git/{host}")

    async def registry(self, host: str) -> Credential | None:
        return await self._read(f"{self._settings.builder_vault_path}/registry/{host}")

    async def _read(self, path: str) -> Credential | None:
        if self._client is None:
            return None
        return await asyncio.to_thread(self._read_sync, path)

    def _read_sync(self, path: str) -> Credential | None:
        assert self._client is not None
        try:
            response: dict[str, Any] = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._settings.vault_mount,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            return None
        except hvac.exceptions.Forbidden as exc:
            # A policy problem is an operator's to fix; say where, never with a value.
            raise SecretsUnavailable(f"permission denied reading {path}") from exc
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SecretsUnavailable(f"reading {path} failed: {type(exc).__name__}") from exc
        data = (response.get("data") or {}).get("data") or {}
        username, password = data.get("username"), data.get("password")
        if not isinstance(password, str) or not password:
            log.warning("builder credential without a password ignored", vault_path=path)
            return None
        log.info("builder credential read", vault_path=path)
        return Credential(username=str(username or "x-access-token"), password=password)


def write_authfile(path: Path, registry: str, credential: Credential) -> Path:
    """A containers auth.json (mode 0600) for buildah/skopeo, so no secret is on argv."""
    pair = f"{credential.username}:{credential.password}".encode()
    content = json.dumps({"auths": {registry: {"auth": base64.b64encode(pair).decode()}}})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return path
