"""The values of a failed release's pinned secrets, read only to blank them in its explanation.

`SecretValues.redactor(app, release)` reads the release record (KV `shaman_releases`) for
its `SecretsPin`, then exactly that KV v2 version of the app's secrets from Vault, and
returns a `Redactor` (redact.py) holding the values of the pinned keys: the task got
those and no others, through the template the scheduler rendered.

The values live in that Redactor only, which the reconciler drops once the explanation is
built: they are never logged, stored or put in an exception message (the Vault client's
errors carry paths and versions only). Any trouble (no VAULT_TOKEN, Vault down, slow or
denying, the version deleted, the release record unreadable) gives `VALUES_UNKNOWN` and a
warning without values: the explanation then withholds the app's own output, and the
outcome goes on. Nothing here raises.

Not here: what is blanked and how (redact.py); when this runs (reconciler.py: after the
rollback command went out, beside the Nomad reads of the explanation).
"""

from __future__ import annotations

import asyncio

from services.watcher import metrics
from services.watcher.redact import SHAPES_ONLY, VALUES_UNKNOWN, Redactor
from shared.bus import TypedKV
from shared.errors import NotFoundError, ShamanError
from shared.logging import get_logger
from shared.records import ReleaseRecord, release_key
from shared.settings import WatcherSettings
from shared.vault import VaultClient

log = get_logger(__name__)


class SecretValueReader(VaultClient):
    """shared.vault's client plus the one read the other services never make: the values
    of one pinned version. It lives with the watcher, its only user, so that no other
    service gains a way to read values back (the port's rule: values go in, not out)."""

    metric_operations = ("read_secret_version",)

    @classmethod
    def for_watcher(cls, settings: WatcherSettings) -> SecretValueReader | None:
        """None without VAULT_TOKEN: every app with secrets then has its output withheld."""
        token = settings.vault_token.get_secret_value() if settings.vault_token else ""
        if not token:
            return None
        return cls(settings.vault_addr, token, settings.vault_mount,
                   timeout_s=settings.vault_timeout_s)

    async def read_version(self, app: str, version: int) -> dict[str, str]:
        """NAME → value of the app's secrets at `version`; NotFoundError when that version
        does not exist or was deleted, the port's errors otherwise."""
        path = self._kv_path(app)
        op = f"read {self.mount}/data/{path} version {version}"

        def read() -> dict[str, str]:
            # Through the port's _call: counted in shaman_vault_requests_total, and its
            # errors raised without the library exception (which holds the response, and
            # with it the values) as context.
            body = self._call(
                "read_secret_version", op, [],
                lambda: self._client.secrets.kv.v2.read_secret_version(
                    path=path, version=version, mount_point=self.mount,
                    raise_on_deleted_version=False),
            )
            return _values(body, op)

        return await asyncio.to_thread(read)


def _values(body: object, op: str) -> dict[str, str]:
    data = (body.get("data") or {}) if isinstance(body, dict) else {}
    meta = data.get("metadata") or {}
    values = data.get("data")
    if meta.get("deletion_time") or meta.get("destroyed") or not isinstance(values, dict):
        raise NotFoundError(f"{op}: the version is deleted or destroyed")
    return {str(k): str(v) for k, v in values.items()}


class SecretValues:
    """Builds the Redactor of one explanation: release record, then Vault, with bounds."""

    def __init__(
        self,
        releases: TypedKV[ReleaseRecord],
        vault: SecretValueReader | None,
        *,
        timeout_s: float = 3.0,
    ) -> None:
        self.releases = releases
        self.vault = vault
        # A bound on the whole read, beside the client's per-request timeout: a Vault that
        # accepts and never answers must not hold the explanation longer than this.
        self.timeout_s = timeout_s

    async def redactor(self, app: str, release: int | None) -> Redactor:
        """What to blank in the explanation of `app`'s `release`. Never raises."""
        if release is None:
            return SHAPES_ONLY  # nothing was released, so no secrets were pinned
        context = {"app": app, "release": release}
        try:
            entry = await self.releases.get(release_key(app, release))
        except ShamanError as exc:
            return self._unknown("release record unreadable", context, str(exc))
        pin = entry.value.secrets if entry is not None else None
        if pin is None or not pin.keys:
            # No record means no release the scheduler could have rendered secrets for.
            metrics.SECRET_VALUE_READS.labels("none").inc()
            return SHAPES_ONLY
        context["secrets_version"] = pin.version
        if self.vault is None:
            return self._unknown("VAULT_TOKEN is not set", context, "")
        try:
            async with asyncio.timeout(self.timeout_s):
                values = await self.vault.read_version(app, pin.version)
        except TimeoutError:
            return self._unknown("vault read timed out", context, f"after {self.timeout_s}s")
        except ShamanError as exc:
            return self._unknown("vault read failed", context, str(exc))
        except Exception as exc:  # a library surprise: its text could quote the response
            return self._unknown("vault read failed", context, type(exc).__name__)
        metrics.SECRET_VALUE_READS.labels("read").inc()
        return Redactor.for_values(values[key] for key in pin.keys if key in values)

    def _unknown(self, why: str, context: dict[str, object], error: str) -> Redactor:
        metrics.SECRET_VALUE_READS.labels("unavailable").inc()
        log.warning("secret values unavailable: the app's output is left out of the "
                    "explanation", why=why, error=error, **context)
        return VALUES_UNKNOWN
