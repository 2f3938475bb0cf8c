"""A failed task that prints credentials: what looks like one reaches no event, record or
log line, the rest of the text does.

Real servers: localnomad's simulated runtime prints the credentials (a `stdout` line at
start, or a driver error, which Nomad's task events quote), NATS holds what the watcher
publishes. The watcher reads no secret values (platform components must not be able to),
so only credential shapes are blanked: `NAME=value` for credential-like names, bearer tokens.
A value printed bare is not recognised (docs/watcher.md); this test does not print one.
"""

from __future__ import annotations

import secrets

import pytest

from services.watcher.explain import REDACTED
from shared.commands import Rollback
from shared.events import RolloutFailed

from .conftest import Harness
from .waiting import wait_for

PASSWORD = "hunter2-canary"


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
async def test_printed_credentials_are_blanked_everywhere_and_the_text_kept(
    harness: Harness, logs: Logs, where: str
) -> None:
    h = harness
    token = f"tok{secrets.token_hex(12)}"
    said = f"DB_PASSWORD={PASSWORD} rejected; Authorization: Bearer {token}"
    blanked = f"DB_PASSWORD={REDACTED} rejected; Authorization: Bearer {REDACTED}"
    await h.seed_app(active="d-sec")
    await h.seed_deploy("d-sec", 2)
    if where == "stdout":
        h.behave(crash_on_start=1, stdout=f"connecting with {said}\n")
    else:
        h.behave(start_error=f"failed to create container: {said}")
    await h.start_watcher()
    h.register("d-sec", 2)

    await h.wait_status("d-sec", "failed")
    failed = await failed_event(h)
    assert (await wait_for(lambda: rollbacks(h), 10, "rollback"))[0].to_version == 1
    deploy = await h.deploy("d-sec")
    assert deploy.reason is not None
    first = failed.allocations[0]
    if where == "stdout":
        # One line per start: a restarted task's log is appended to.
        assert first.log_tail and set(first.log_tail) == {f"connecting with {blanked}"}
        assert "exited with code 1" in deploy.reason
    else:
        # Nomad's words quote the app's: the reason and the task events are scrubbed too.
        assert (f"could not be started by the driver: failed to create container: "
                f"{blanked}") in deploy.reason
        assert any(f"container: {blanked}" in line for line in first.task_events)
    assert failed.reason == deploy.reason
    assert deploy.rollback is not None and deploy.rollback.reason == deploy.reason

    published = await h.everything_published()  # events, commands, every record revision
    for leaked in (PASSWORD, token):
        assert leaked.encode() not in published
        assert leaked not in deploy.reason
        assert leaked not in repr(failed)
    assert REDACTED.encode() in published
    logged = logs.text()
    assert "deploy failed" in logged  # the watcher's log is what was captured
    assert PASSWORD not in logged and token not in logged
