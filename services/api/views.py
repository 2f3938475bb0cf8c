"""Records → public views (services.api.models), in one place.

Views carry what a caller of the app's team may see; no token hashes and no secret
values exist in the records to begin with, and none are added here.
"""

from __future__ import annotations

import msgspec

from services.api.models import (
    AppView,
    DeployView,
    GitView,
    HealthView,
    ReleaseView,
    RollbackStateView,
    RolloutView,
    SecretsPinView,
    StatusChangeView,
)
from shared.records import AppRecord, DeployRecord, ReleaseRecord


def app_view(record: AppRecord) -> AppView:
    spec = record.spec
    p = spec.process
    return AppView(
        name=spec.name, team=spec.team, image=spec.image,
        git=GitView(url=spec.git.url, ref=spec.git.ref) if spec.git else None,
        dockerfile=spec.dockerfile, port=p.port, instances=spec.instances,
        cpu_mhz=p.cpu_mhz, memory_mb=p.memory_mb, command=p.command, args=list(p.args),
        health=HealthView(path=p.health.path, interval_s=p.health.interval_s,
                          timeout_s=p.health.timeout_s),
        rollout=RolloutView(
            canaries=p.rollout.canaries, max_parallel=p.rollout.max_parallel,
            min_healthy_time_s=p.rollout.min_healthy_time_s,
            healthy_deadline_s=p.rollout.healthy_deadline_s,
            progress_deadline_s=p.rollout.progress_deadline_s,
        ),
        domains=list(p.domains), auto_rollback=spec.auto_rollback, state=record.state,
        current_release=record.current_release,
        last_healthy_release=record.last_healthy_release,
        latest_deploy_id=record.latest_deploy_id, active_deploy_id=record.active_deploy_id,
        created_at=record.created_at, created_by=record.created_by,
    )


def deploy_view(record: DeployRecord) -> DeployView:
    rb = record.rollback
    return DeployView(
        id=record.id, app=record.app, kind=record.kind, status=record.status,
        release=record.release, reason=record.reason, source=record.source,
        description=record.description, requested_by=record.requested_by,
        created_at=record.created_at, updated_at=record.updated_at, image=record.image,
        digest=record.digest, superseded_by=record.superseded_by, automatic=record.automatic,
        rollback_for=record.rollback_for,
        rollback=RollbackStateView(
            requested_at=rb.requested_at, reason=rb.reason, to_release=rb.to_release,
            deploy_id=rb.deploy_id, outcome=rb.outcome,
        ) if rb else None,
        job_version=record.job_version,
        history=[StatusChangeView(status=h.status, time=h.time, reason=h.reason)
                 for h in record.history],
    )


def release_view(record: ReleaseRecord) -> ReleaseView:
    return ReleaseView(
        app=record.app, version=record.version, kind=record.kind,
        description=record.description, created_by=record.created_by,
        deploy_id=record.deploy_id, image=record.image, digest=record.digest,
        config=dict(record.config),
        secrets=SecretsPinView(version=record.secrets.version, keys=list(record.secrets.keys))
        if record.secrets else None,
        rollback_of=record.rollback_of, created_at=record.created_at,
        process=msgspec.to_builtins(record.process),
    )
