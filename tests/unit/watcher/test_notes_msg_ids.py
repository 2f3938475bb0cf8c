"""The watcher's outbox uses the one deploy.finished message id every service uses."""

from __future__ import annotations

from services.watcher.notes import msg_id, step_finished
from shared.events.deploy import finished_msg_id


def test_watcher_finished_msg_id_is_the_shared_one() -> None:
    for status in ("healthy", "failed", "rolled_back", "superseded", "cancelled"):
        assert msg_id("d-1", step_finished(status)) == finished_msg_id("d-1", status)
