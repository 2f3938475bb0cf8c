"""Which Redactor an explanation gets: the release's pin, then Vault; trouble never raises."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from services.watcher.redact import REDACTED, SHAPES_ONLY, VALUES_UNKNOWN
from services.watcher.secret_values import SecretValueReader, SecretValues
from shared.bus.kv import Entry
from shared.errors import BackendUnavailable, SecretsUnavailable
from shared.records import ReleaseRecord, SecretsPin, release_key
from shared.settings import WatcherSettings


class Releases:
    def __init__(self, record: ReleaseRecord | None = None, error: Exception | None = None):
        self.record, self.error = record, error
        self.keys: list[str] = []

    async def get(self, key: str) -> Entry[ReleaseRecord] | None:
        self.keys.append(key)
        if self.error is not None:
            raise self.error
        return Entry(key, self.record, 1) if self.record is not None else None


class Vault:
    def __init__(self, values: dict[str, str] | None = None, error: Exception | None = None,
                 hang: bool = False):
        self.values, self.error, self.hang = values or {}, error, hang
        self.calls: list[tuple[str, int]] = []

    async def read_version(self, app: str, version: int) -> dict[str, str]:
        self.calls.append((app, version))
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return self.values


def release(secrets: SecretsPin | None) -> ReleaseRecord:
    return ReleaseRecord(app="web", version=2, kind="deploy", description="", created_by="t",
                         deploy_id="d", image="i@sha256:0", digest="sha256:0", secrets=secrets)


PIN = SecretsPin(version=7, keys=["DB_PASS", "API_KEY"])


def values_of(releases: Releases, vault: Vault | None, timeout_s: float = 1.0) -> SecretValues:
    return SecretValues(releases, vault, timeout_s=timeout_s)  # type: ignore[arg-type]


async def test_the_pinned_version_s_values_of_the_pinned_keys_are_blanked() -> None:
    releases = Releases(release(PIN))
    vault = Vault({"DB_PASS": "pinned-db-pass", "API_KEY": "pinned-api-key",
                   "OTHER": "not-pinned-value"})
    r = await values_of(releases, vault).redactor("web", 2)
    assert releases.keys == [release_key("web", 2)] and vault.calls == [("web", 7)]
    assert r.app_output("pinned-db-pass pinned-api-key not-pinned-value") == (
        f"{REDACTED} {REDACTED} not-pinned-value")
    assert not r.withhold_app_output


@pytest.mark.parametrize("record", [None, release(None), release(SecretsPin(version=3, keys=[]))])
async def test_a_release_without_secrets_needs_no_vault(record: ReleaseRecord | None) -> None:
    vault = Vault()
    assert await values_of(Releases(record), vault).redactor("web", 2) is SHAPES_ONLY
    assert vault.calls == []


async def test_no_release_number_is_nothing_to_blank() -> None:
    assert await values_of(Releases(error=AssertionError("no read")), None).redactor(
        "web", None) is SHAPES_ONLY


@pytest.mark.parametrize("vault", [
    None,  # no VAULT_TOKEN
    Vault(error=SecretsUnavailable("cannot connect to http://127.0.0.1:1")),
    Vault(error=ValueError("a library surprise")),
    Vault(hang=True),  # accepts and never answers: the bound ends it
])
async def test_vault_trouble_withholds_the_apps_output(
    vault: Vault | None, capsys: pytest.CaptureFixture[str]
) -> None:
    r = await values_of(Releases(release(PIN)), vault, timeout_s=0.2).redactor("web", 2)
    assert r is VALUES_UNKNOWN
    assert "secret values unavailable" in capsys.readouterr().out


async def test_an_unreadable_release_record_withholds_the_apps_output() -> None:
    releases = Releases(error=BackendUnavailable("nats", "kv get failed"))
    assert await values_of(releases, Vault()).redactor("web", 2) is VALUES_UNKNOWN


def test_no_reader_without_a_token() -> None:
    settings = WatcherSettings(vault_token=None)  # type: ignore[call-arg]
    assert SecretValueReader.for_watcher(settings) is None
    with_token = WatcherSettings(
        vault_token=SecretStr("t"), vault_addr="http://127.0.0.1:1")  # type: ignore[call-arg]
    reader = SecretValueReader.for_watcher(with_token)
    assert reader is not None and reader.timeout_s == with_token.vault_timeout_s
