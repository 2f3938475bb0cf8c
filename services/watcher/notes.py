"""The watcher's own memory of each deploy, kept in the `shaman_watcher` KV bucket.

The deploy record (shared.records.DeployRecord) holds the outcome; these notes hold what
only the watcher needs to finish its work after a crash:

- `published`: which timeline events and commands of the deploy were published. The
  watcher writes the outcome first (CAS on the deploy record), then publishes, then notes
  the step here. A watcher that died in between finds the outcome written and the step
  missing, and publishes again with the same deterministic `Nats-Msg-Id`, so the event
  exists once (an outbox; JetStream's duplicate window covers a quick restart).
- `fail_reason` / `failed_deployment`: why the watcher itself failed a Nomad deployment
  (fail fast, platform deadline), so the explanation survives the restart that reads the
  `failed` status back from Nomad.
- `previous_healthy`: the app's last healthy release before this deploy went healthy,
  the target if this release starts crash-looping afterwards.

Keys: `deploy.<deploy_id>`; `rollback-pending.<deploy_id>` marks a deploy whose
automatic rollback has no outcome yet (the relist timer looks at those). Checkpoint:
`checkpoint` (stream.py). This module only defines shapes and keys.
"""

from __future__ import annotations

import msgspec

from shared.subjects import kv_key

# Outbox steps, also the suffix of each publish's Nats-Msg-Id (`<deploy_id>:<step>`).
STEP_HEALTHY = "healthy"
STEP_FAILED = "failed"
STEP_ROLLBACK_COMMAND = "rollback"
STEP_ROLLBACK_STARTED = "rollback.started"
STEP_ROLLBACK_SUCCEEDED = "rollback.succeeded"
STEP_ROLLBACK_FAILED = "rollback.failed"


def step_finished(status: str) -> str:
    """The outbox step of `deploy.finished` with this status.

    One per status, not one per deploy: a deploy that went healthy (`deploy.finished`
    healthy) can still crash-loop and end `rolled_back` or `failed`, and that later
    outcome must reach the timeline too, with a message id JetStream does not drop as a
    duplicate of the first.
    """
    return f"finished.{status}"


class DeployNotes(msgspec.Struct, kw_only=True):
    deploy_id: str
    published: list[str] = []
    fail_reason: str | None = None
    failed_deployment: str | None = None  # the Nomad deployment the watcher failed
    previous_healthy: int | None = None
    previous_healthy_known: bool = False

    def done(self, step: str) -> bool:
        return step in self.published

    def all_done(self, *steps: str) -> bool:
        return all(step in self.published for step in steps)


def notes_key(deploy_id: str) -> str:
    return kv_key("deploy", deploy_id)


def rollback_pending_key(deploy_id: str) -> str:
    return kv_key("rollback-pending", deploy_id)


ROLLBACK_PENDING_PREFIX = "rollback-pending"
CHECKPOINT_KEY = "checkpoint"


def msg_id(deploy_id: str, step: str) -> str:
    """The deterministic Nats-Msg-Id of one publish of one deploy."""
    return f"{deploy_id}:{step}"
