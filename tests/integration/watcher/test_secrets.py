"""A failed task that prints one of its secret values: the value reaches no event, record or
log line, the rest of the text does; with Vault out of reach the outcome and the rollback
still happen and the app's output is withheld.

Real servers: OpenBao (the session's, dev mode) holds the app's secrets; localnomad's
simulated runtime prints the value (a `stdout` line at start, or a driver error) without
any credential-like name around it, so only the value itself can give it away.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from typing import Any

import hvac
import pytest

from services.watcher.redact import REDACTED, WITHHELD
from shared.commands import Rollback
from shared.events import RolloutFailed
from shared.records import SecretsPin

from .conftest import Harness
from .waiting import wait_for


def write_secrets(openbao: Any, app: str, values: dict[str, str]) -> int:
    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    written = vault.secrets.kv.v2.create_or_update_secret(
        path=f"shaman/apps/{app}", secret=values, mount_point="secret")
    return int(written["data"]["version"])


async def rollbacks(h: Harness) -> list[Rollback]:
    return [c for c in await h.commands() if isinstance(c, Rollback)]


async def failed_event(h: Harness) -> RolloutFailed:
    [event] = await h.wait_event("rollout.failed")
    assert isinstance(event, RolloutFailed) and event.allocations
    return event


class Logs:
    """Everything the in-process watcher logged so far (structlog prints; the stdlib's
    records land in caplog when a test configured logging through it)."""

    def __init__(self, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
        self.capfd, self.caplog, self.seen = capfd, caplog, ""

    def text(self) -> str:
        out, err = self.capfd.readouterr()
        self.seen += out + err
        return self.seen + self.caplog.text


@pytest.fixture
def logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Logs:
    return Logs(capfd, caplog)


@pytest.mark.parametrize("where", ["stdout", "driver error"])
async def test_a_printed_secret_value_is_blanked_everywhere_and_the_text_kept(
    harness: Harness, openbao: Any, logs: Logs, where: str
) -> None:
    h = harness
    value = f"zq{secrets.token_hex(10)}"  # nothing credential-like about it or around it
    pinned = write_secrets(openbao, h.app, {"DB_PASS": value, "SHORT": "on"})
    # A newer version the release does not pin: the pinned one is what is read.
    write_secrets(openbao, h.app, {"DB_PASS": f"zq{secrets.token_hex(10)}", "SHORT": "on"})
    await h.seed_app(active="d-sec")
    await h.seed_deploy("d-sec", 2)
    await h.seed_release(2, "d-sec", SecretsPin(version=pinned, keys=["DB_PASS", "SHORT"]))
    if where == "stdout":
        h.behave(crash_on_start=1, stdout=f"connecting to the primary with {value} failed\n")
    else:
        h.behave(start_error=f"failed to create container: {value} rejected")
    await h.start_watcher(vault_addr=openbao.addr, vault_token=openbao.token)
    h.register("d-sec", 2)

    await h.wait_status("d-sec", "failed")
    failed = await failed_event(h)
    assert (await wait_for(lambda: rollbacks(h), 10, "rollback"))[0].to_version == 1
    deploy = await h.deploy("d-sec")
    assert deploy.reason is not None
    first = failed.allocations[0]
    if where == "stdout":
        assert f"connecting to the primary with {REDACTED} failed" in first.log_tail
        assert "exited with code 1" in deploy.reason
    else:
        assert (f"could not be started by the driver: failed to create container: "
                f"{REDACTED} rejected") in deploy.reason
        assert any(f"container: {REDACTED} rejected" in line for line in first.task_events)
    assert failed.reason == deploy.reason

    published = await h.everything_published()
    assert value.encode() not in published
    assert REDACTED.encode() in published
    logged = logs.text()
    assert "deploy failed" in logged  # the watcher's log is what was captured
    assert value not in logged
    assert "secret values unavailable" not in logged


@pytest.fixture
def silent_vault() -> Iterator[str]:
    """An address that accepts connections and never answers (a hung Vault)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def refused_vault() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed: nothing listens


@pytest.mark.parametrize("vault", ["refused", "silent"])
async def test_vault_out_of_reach_delays_nothing_and_withholds_the_apps_output(
    harness: Harness, openbao: Any, silent_vault: str, logs: Logs, vault: str
) -> None:
    h = harness
    value = f"zq{secrets.token_hex(10)}"
    pinned = write_secrets(openbao, h.app, {"DB_PASS": value})
    await h.seed_app(active="d-novault")
    await h.seed_deploy("d-novault", 2)
    await h.seed_release(2, "d-novault", SecretsPin(version=pinned, keys=["DB_PASS"]))
    h.behave(crash_on_start=1, stdout=f"connecting to the primary with {value} failed\n")
    bound_s = 3.0
    await h.start_watcher(vault_addr=silent_vault if vault == "silent" else refused_vault(),
                          vault_token="unused", vault_timeout_s=bound_s)
    h.register("d-novault", 2)

    [command] = await wait_for(lambda: rollbacks(h), 20, "rollback")
    assert command.to_version == 1
    if vault == "silent":
        # The command went out while the explanation still waits on Vault.
        assert await h.events("rollout.failed") == []
    failed = await failed_event(h)
    deploy = await h.wait_status("d-novault", "failed")
    assert deploy.rollback is not None and deploy.rollback.to_release == 1
    [alloc] = failed.allocations[:1]
    assert alloc.log_tail == [WITHHELD]
    assert alloc.exit_code == 1 and alloc.task_events  # the facts of the events stay
    assert deploy.reason is not None and "exited with code 1" in deploy.reason

    assert value.encode() not in await h.everything_published()
    logged = logs.text()
    assert "secret values unavailable" in logged
    assert value not in logged
