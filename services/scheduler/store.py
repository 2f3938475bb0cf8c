"""The scheduler's view of the platform's state: three KV buckets and its deploy writes.

Who writes what is docs/decisions/0001-deploy-flow.md: the scheduler creates releases
(`create` only), moves the app's `next_release` / `current_release` /
`active_deploy_id` (CAS), and moves deploys to `deploying` (or `superseded`, or
`failed` for what it alone can decide), recording `release`, `job_modify_index`,
`job_version`. Every deploy write goes through `shared.records.transition` inside
`TypedKV.mutate`, so a stale or duplicate writer loses quietly; each function here
says whether *this* call made the change, and only then is the matching event
published (with a deterministic Nats-Msg-Id, so a crash between the write and the
publish is repaired by the redelivery without a duplicate event). Every deploy this
service ends also gets its `deploy.finished` (the one honest outcome on the timeline),
msg id `<deploy_id>:finished.<status>` as everywhere else (`finished_msg_id`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import subjects
from shared.bus import Bus, TypedKV
from shared.events import DeployCancelled, DeployFinished, DeploySuperseded
from shared.events.deploy import finished_msg_id
from shared.logging import get_logger
from shared.records import AppRecord, DeployRecord, ReleaseRecord, transition

log = get_logger(__name__)


@dataclass
class Stores:
    apps: TypedKV[AppRecord]
    releases: TypedKV[ReleaseRecord]
    deploys: TypedKV[DeployRecord]

    @classmethod
    async def open(cls, bus: Bus) -> Stores:
        js = bus.js
        return cls(
            apps=TypedKV(await js.key_value(subjects.KV_APPS), AppRecord),
            releases=TypedKV(await js.key_value(subjects.KV_RELEASES), ReleaseRecord),
            deploys=TypedKV(await js.key_value(subjects.KV_DEPLOYS), DeployRecord),
        )




async def publish_finished(bus: Bus, record: DeployRecord) -> None:
    """`deploy.finished` for `record`, which has just reached its (terminal) status."""
    await bus.publish_event(
        DeployFinished(app=record.app, deploy_id=record.id, status=record.status,
                       release=record.release, reason=record.reason,
                       duration_s=_duration(record)),
        msg_id=finished_msg_id(record.id, record.status),
    )


async def fail_deploy(bus: Bus, stores: Stores, deploy_id: str, reason: str) -> bool:
    """Move a deploy to `failed` with `reason` (no-op if it is already past that point).

    Publishes `deploy.finished` when this call made the change.
    """
    def change(record: DeployRecord) -> DeployRecord | None:
        if not transition(record, "failed", reason):
            return None
        return record

    # mutate returns the entry it wrote, None when `change` declined (not ours to move).
    written = await stores.deploys.mutate(deploy_id, change)
    if written is None:
        return False
    record = written.value
    log.info("deploy failed", app=record.app, deploy_id=deploy_id, reason=reason)
    await publish_finished(bus, record)
    return True


async def supersede_deploy(bus: Bus, stores: Stores, deploy_id: str, by: str,
                           *, release: int | None = None) -> bool:
    """Move a non-terminal deploy to `superseded` by deploy `by`; publish
    `deploy.superseded` and `deploy.finished` when this call made the change."""
    def change(record: DeployRecord) -> DeployRecord | None:
        if not transition(record, "superseded", f"superseded by {by}"):
            return None
        record.superseded_by = by
        if release is not None and record.release is None:
            record.release = release
        return record

    # mutate returns the entry it wrote, None when `change` declined (not ours to move).
    written = await stores.deploys.mutate(deploy_id, change)
    if written is None:
        return False
    record = written.value
    log.info("deploy superseded", app=record.app, deploy_id=deploy_id, superseded_by=by)
    await bus.publish_event(
        DeploySuperseded(app=record.app, deploy_id=deploy_id, superseded_by=by),
        msg_id=f"{deploy_id}:superseded",
    )
    await publish_finished(bus, record)
    return True


async def cancel_deploy(bus: Bus, stores: Stores, deploy_id: str, reason: str) -> bool:
    """Move a non-terminal deploy to `cancelled`; publish `deploy.cancelled` and
    `deploy.finished` when this call made the change."""
    def change(record: DeployRecord) -> DeployRecord | None:
        if not transition(record, "cancelled", reason):
            return None
        return record

    # mutate returns the entry it wrote, None when `change` declined (not ours to move).
    written = await stores.deploys.mutate(deploy_id, change)
    if written is None:
        return False
    record = written.value
    log.info("deploy cancelled", app=record.app, deploy_id=deploy_id, reason=reason)
    await bus.publish_event(
        DeployCancelled(app=record.app, deploy_id=deploy_id, reason=reason),
        msg_id=f"{deploy_id}:cancelled",
    )
    await publish_finished(bus, record)
    return True


def _duration(record: DeployRecord) -> float:
    return max(0.0, (record.updated_at - record.created_at).total_seconds())
