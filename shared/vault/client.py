"""The Vault/OpenBao port: each app's secrets as one KV v2 path, written by hvac off the loop.

An app's secrets live at `<mount>/data/shaman/apps/<app>` as one map of NAME → value, so a
single KV v2 version number pins all of them; a release records that version and the
rendered Nomad job reads it with a `template` block (`template_path()`), so secret values
never travel over NATS, never sit in KV and never appear in a job spec.

Values enter this module (`write_secrets`) and never leave it: reads return names and
versions only, exceptions carry names, paths and versions only (any value that might
appear in a backend's error text is scrubbed, and library exceptions are not chained),
and nothing here logs a value. Shaman's services never need to read a value back.

Writes are read-modify-write with KV v2 check-and-set (`cas` = the version just read), so
two concurrent writers never lose each other's keys; a lost CAS is retried a few times
with a fresh read, then surfaces as ConflictError. Writing values equal to the stored
ones creates no new version (an idempotent retry makes no new release).

Every HTTP call to Vault is counted and timed by operation and outcome in
shared.vault.metrics (`shaman_vault_requests_total`, `shaman_vault_request_seconds`).

Not here: Vault policies, auth methods, workload-identity setup (devstack and operators
own those) or reading values for anyone.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, TypedDict, TypeVar

import hvac
import hvac.exceptions as hvac_exc
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from shared.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    SecretsUnavailable,
    ShamanError,
    ValidationFailed,
)
from shared.logging import get_logger
from shared.tasks import capped_backoff
from shared.vault import metrics

__all__ = ["APP_PREFIX", "SecretMetadata", "SecretsWrite", "VaultClient", "VaultSettingsLike"]

log = get_logger(__name__)

T = TypeVar("T")

APP_PREFIX = "shaman/apps"
_APP_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Scrubbing shorter strings would mangle messages without protecting anything real.
_MIN_SCRUB_LEN = 3


class SecretsWrite(TypedDict):
    """Result of a write: the KV v2 version that now holds the app's secrets, and the
    key names in exactly that version (a later read could see a newer version)."""

    version: int
    previous_version: int  # equal to `version` when nothing changed
    keys: list[str]


class SecretMetadata(TypedDict):
    """What may be shown about an app's secrets: the current version and the key names."""

    version: int
    keys: list[str]


def _check_app(app: str) -> None:
    if not isinstance(app, str) or not _APP_NAME.match(app):
        raise ValidationFailed.field(
            "app", "must be a DNS label: lowercase letters, digits and '-', at most 63"
        )


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_NAME.match(key):
        raise ValidationFailed.field(
            key if isinstance(key, str) and len(key) <= 128 else "secrets",
            "must be an environment variable name: letters, digits and '_', "
            "not starting with a digit",
        )


class VaultSettingsLike(Protocol):
    """The fields of shared.settings.VaultSettings this port reads."""

    @property
    def vault_addr(self) -> str: ...

    @property
    def vault_token(self) -> Any: ...  # pydantic SecretStr | None

    @property
    def vault_mount(self) -> str: ...


class VaultClient:
    """KV v2 access for Shaman's app secrets on one Vault/OpenBao mount.

    Construct in `create_app`, push `aclose` on the exit stack. Constructing opens no
    connection. `token` is used for requests and is not stored anywhere else.
    """

    # The operations this client makes: their series exist at 0 from its construction. A
    # subclass that makes other calls names its own.
    metric_operations: tuple[metrics.Operation, ...] = (
        "read_secret",
        "write_secret",
        "set_max_versions",
        "health",
    )

    def __init__(
        self,
        addr: str,
        token: str,
        mount: str = "secret",
        *,
        timeout_s: float = 10.0,
        verify: bool | str = True,
        max_versions: int = 100,
        cas_attempts: int = 5,
    ) -> None:
        if not token:
            raise ValueError("a Vault token is required (VAULT_TOKEN)")
        self.addr = addr.rstrip("/")
        self.mount = mount.strip("/")
        self.timeout_s = timeout_s
        # Releases pin versions and rollbacks restore them: keep more history than
        # KV v2's default of 10 so an old release's secrets still exist.
        self.max_versions = max_versions
        self.cas_attempts = cas_attempts
        self._client = hvac.Client(url=self.addr, token=token, timeout=timeout_s, verify=verify)
        metrics.declare(self.metric_operations)

    @classmethod
    def from_settings(cls, settings: VaultSettingsLike) -> VaultClient:
        """A client for VAULT_ADDR / VAULT_TOKEN / SHAMAN_VAULT_MOUNT as the settings read them."""
        token = settings.vault_token
        plain = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        if not plain:
            raise ValueError("VAULT_TOKEN is not set: the secrets backend needs a token")
        return cls(settings.vault_addr, str(plain), settings.vault_mount)

    def __repr__(self) -> str:
        return f"VaultClient(addr={self.addr!r}, mount={self.mount!r})"

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.adapter.close)

    async def __aenter__(self) -> VaultClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- paths -----------------------------------------------------------------------

    @staticmethod
    def _kv_path(app: str) -> str:
        _check_app(app)
        return f"{APP_PREFIX}/{app}"

    def path_for(self, app: str) -> str:
        """The API path of the app's secrets (`secret/data/shaman/apps/<app>`), for policies."""
        return f"{self.mount}/data/{self._kv_path(app)}"

    def template_path(self, app: str, version: int) -> str:
        """The path a Nomad `template` reads: `{{ with secret "<this>" }}` pins `version`."""
        if version < 1:
            raise ValueError("a KV v2 version starts at 1")
        return f"{self.path_for(app)}?version={version}"

    # -- public operations ---------------------------------------------------------------

    async def write_secrets(self, app: str, values: Mapping[str, str]) -> SecretsWrite:
        """Set `values` (NAME → value) for `app`, keeping the keys not mentioned.

        One new KV v2 version holds the merged map; returns it and the previous one.
        Raises ValidationFailed (bad app or key name, non-string value), ConflictError
        (CAS lost `cas_attempts` times), SecretsUnavailable, PermanentError (denied).
        """
        path = self._kv_path(app)
        for key, value in values.items():
            _check_key(key)
            if not isinstance(value, str):
                raise ValidationFailed.field(key, "must be a string")
        updates = dict(values)
        scrub = list(updates.values())

        def write() -> SecretsWrite:
            current, existing = self._read_latest(path, scrub)
            merged = {**existing, **updates}
            if current > 0 and merged == existing:
                return SecretsWrite(version=current, previous_version=current,
                                    keys=sorted(merged))
            new = self._cas_write(path, merged, current, scrub)
            return SecretsWrite(version=new, previous_version=current, keys=sorted(merged))

        result = await asyncio.to_thread(self._with_cas_retry, f"write secrets of {app}", write)
        log.info(
            "secrets written",
            app=app,
            secret_names=sorted(updates),
            version=result["version"],
            previous_version=result["previous_version"],
        )
        return result

    async def delete_secret(self, app: str, key: str) -> SecretsWrite:
        """Remove `key` from the app's secrets; returns the new version and its keys.

        Raises NotFoundError when the key is not set.
        """
        path = self._kv_path(app)
        _check_key(key)

        def delete() -> SecretsWrite:
            current, existing = self._read_latest(path, [])
            if key not in existing:
                raise NotFoundError(f"secret {key} is not set for app {app}")
            remaining = {k: v for k, v in existing.items() if k != key}
            new = self._cas_write(path, remaining, current, list(existing.values()))
            return SecretsWrite(version=new, previous_version=current, keys=sorted(remaining))

        result = await asyncio.to_thread(self._with_cas_retry, f"delete secret of {app}", delete)
        log.info("secret deleted", app=app, secret_name=key, version=result["version"])
        return result

    async def secret_metadata(self, app: str) -> SecretMetadata:
        """The current version and the sorted key names (`version` 0 = no secrets yet)."""
        path = self._kv_path(app)

        def read() -> SecretMetadata:
            version, values = self._read_latest(path, [])
            return SecretMetadata(version=version, keys=sorted(values))

        return await asyncio.to_thread(read)

    async def health(self) -> bool:
        """For /healthz: Vault answers, is initialised and unsealed. Never raises."""

        def probe() -> bool:
            started = time.perf_counter()
            try:
                result = self._client.sys.read_health_status(method="GET", standby_ok=True)
            except (hvac_exc.VaultError, requests.RequestException) as exc:
                metrics.observe("health", metrics.outcome_of(exc), time.perf_counter() - started)
                return False
            # sys/health answers a sealed or uninitialised Vault with a 5xx, which hvac
            # returns (as a Response) rather than raises.
            status = result.status_code if isinstance(result, requests.Response) else 200
            metrics.observe(
                "health", metrics.outcome_for_status(status), time.perf_counter() - started
            )
            if isinstance(result, dict):
                return bool(result.get("initialized")) and not result.get("sealed", True)
            return False

        return await asyncio.to_thread(probe)

    # -- sync internals (run in a worker thread) ------------------------------------

    def _with_cas_retry(self, op: str, fn: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(ConflictError),
            stop=stop_after_attempt(self.cas_attempts),
            wait=capped_backoff(0.05, 1.0, 0.1),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return fn()
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _read_latest(self, path: str, scrub: list[str]) -> tuple[int, dict[str, str]]:
        """(latest version, its data); (0, {}) when never written, data {} when deleted."""
        op = f"read {self.mount}/data/{path}"
        try:
            body = self._call(
                "read_secret",
                op,
                scrub,
                lambda: self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.mount, raise_on_deleted_version=False
                ),
            )
        except NotFoundError:
            return 0, {}
        data = (body.get("data") or {}) if isinstance(body, dict) else {}
        meta = data.get("metadata") or {}
        version = int(meta.get("version") or 0)
        if meta.get("deletion_time") or meta.get("destroyed"):
            return version, {}
        values = data.get("data") or {}
        return version, {str(k): str(v) for k, v in values.items()}

    def _cas_write(self, path: str, data: dict[str, str], cas: int, scrub: list[str]) -> int:
        op = f"write {self.mount}/data/{path}"
        body = self._call(
            "write_secret",
            op,
            scrub,
            lambda: self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, cas=cas, mount_point=self.mount
            ),
        )
        version = int(((body or {}).get("data") or {}).get("version") or 0)
        if cas == 0 and self.max_versions:
            self._call(
                "set_max_versions",
                f"set max_versions on {self.mount}/metadata/{path}",
                [],
                lambda: self._client.secrets.kv.v2.update_metadata(
                    path=path, max_versions=self.max_versions, mount_point=self.mount
                ),
            )
        return version

    def _call(
        self, operation: metrics.Operation, op: str, scrub: list[str], fn: Callable[[], Any]
    ) -> Any:
        # `operation` is the metric label; `op` is the text for errors (it names the path).
        try:
            with metrics.track(operation):
                return fn()
        except (hvac_exc.VaultError, requests.RequestException) as exc:
            error = self._map_error(exc, op, scrub)
        # Raised outside the except block on purpose: the library exception (which holds
        # the request, and with it the values) is neither chained nor kept as context.
        raise error

    def _map_error(self, exc: BaseException, op: str, scrub: list[str]) -> ShamanError:
        if isinstance(exc, requests.Timeout):
            return SecretsUnavailable(f"{op} timed out after {self.timeout_s}s at {self.addr}")
        if isinstance(exc, requests.ConnectionError):
            return SecretsUnavailable(f"cannot connect to {self.addr} ({op})")
        if isinstance(exc, requests.RequestException):
            return SecretsUnavailable(f"{op} failed: {type(exc).__name__}")
        assert isinstance(exc, hvac_exc.VaultError)
        errors = _scrub(", ".join(str(e) for e in (exc.errors or [])), scrub)
        if isinstance(exc, hvac_exc.Forbidden | hvac_exc.Unauthorized):
            return PermanentError(
                f"vault denied {op}: {errors or 'permission denied'}; "
                "check VAULT_TOKEN and its policy"
            )
        if isinstance(exc, hvac_exc.InvalidRequest):
            if "check-and-set" in errors:
                return ConflictError(f"{op}: secrets changed concurrently; retry")
            return PermanentError(f"vault rejected {op}: {errors or 'invalid request'}")
        if isinstance(exc, hvac_exc.InvalidPath):
            if errors:  # "no handler for route": the mount does not exist
                return PermanentError(
                    f"vault has no KV v2 engine at {self.mount}/ ({errors}); "
                    "enable it or set SHAMAN_VAULT_MOUNT"
                )
            return NotFoundError(f"{op}: not found")
        if isinstance(exc, hvac_exc.VaultDown | hvac_exc.VaultNotInitialized):
            return SecretsUnavailable(f"vault at {self.addr} is sealed or not initialised")
        if isinstance(exc, hvac_exc.RateLimitExceeded):
            return SecretsUnavailable(f"{op}: rate limited by vault", retry_after_s=1.0)
        return SecretsUnavailable(f"{op} failed: {type(exc).__name__}: {errors}")


def _scrub(text: str, values: list[str]) -> str:
    # Longest first, so a value containing another is replaced whole.
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= _MIN_SCRUB_LEN:
            text = text.replace(value, "[REDACTED]")
    return text
