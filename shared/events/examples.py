"""Golden examples, one per event type: the source of docs/events.md.

A unit test checks that every timeline event type has exactly one example
here and that docs/events.md is what `python -m shared.events.docs` writes,
so the published contract cannot drift from the code.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events.build import BuildFailed, BuildLog, BuildStarted, BuildSucceeded
from shared.events.deploy import (
    DeployAccepted,
    DeployCancelled,
    DeployFinished,
    DeployRejected,
    DeployRequested,
    DeploySuperseded,
)
from shared.events.release import AppScaled, DriftDetected, ReleaseCreated
from shared.events.rollout import (
    AllocationFailure,
    GroupProgress,
    RollbackFailed,
    RollbackStarted,
    RollbackSucceeded,
    RolloutFailed,
    RolloutHealthy,
    RolloutProgress,
    RolloutSubmitted,
)

T = datetime(2026, 11, 28, 9, 30, 0, 123000, tzinfo=UTC)
D = "d-0193f0a1c2e3-7f3a9c"
DIGEST = "sha256:3f2c1a9b8e7d6c5b4a3928170605f4e3d2c1b0a99887766554433221100ffee"
IMAGE = f"registry.internal:5000/hello@{DIGEST}"
NOMAD_DEPLOYMENT = "5d6a8c8e-7b0f-4c1e-9a55-0c2b1f3e4d5a"

EXAMPLES = [
    DeployRequested(app="hello", time=T, image="registry.internal:5000/hello:1.4.2",
                    description="CI build 812"),
    DeployAccepted(app="hello", deploy_id=D, time=T, kind="deploy",
                   source="git https://git.internal/hello.git@main", requested_by="alice",
                   description=""),
    DeployRejected(app="hello", time=T, code="forbidden",
                   message="token of team 'payments' may not deploy app 'hello'",
                   request_id="ci-812"),
    DeploySuperseded(app="hello", deploy_id=D, time=T, superseded_by="d-0193f0a1d4f5-11aa02"),
    DeployCancelled(app="hello", deploy_id=D, time=T, reason="app destroyed"),
    DeployFinished(app="hello", deploy_id=D, time=T, status="healthy", release=7,
                   reason=None, duration_s=14.2),
    BuildStarted(app="hello", deploy_id=D, time=T, build_id=D, builder="builder-1",
                 source="git https://git.internal/hello.git@main", attempt=1),
    BuildLog(app="hello", deploy_id=D, time=T, build_id=D, seq=0,
             lines=["STEP 1/4: FROM registry.internal:5000/library/busybox:stable",
                    "STEP 2/4: COPY . /www"]),
    BuildSucceeded(app="hello", deploy_id=D, time=T, build_id=D,
                   image="registry.internal:5000/hello:3f2c1a9b8e7d", digest=DIGEST,
                   duration_s=3.1, cached=False),
    BuildFailed(app="hello", deploy_id=D, time=T, build_id=D,
                reason="step 3/4 failed: RUN make: exit status 2", step="RUN make",
                log_tail=["make: *** No rule to make target 'all'.  Stop.",
                          "error building at STEP \"RUN make\": exit status 2"]),
    ReleaseCreated(app="hello", deploy_id=D, time=T, release=7, kind="deploy",
                   description="Deploy 3f2c1a9", created_by="alice", image=IMAGE),
    AppScaled(app="hello", time=T, instances=3, previous=2, requested_by="alice"),
    DriftDetected(app="hello", time=T, release=7,
                  description="job was stopped outside Shaman; registered release v7 again"),
    RolloutSubmitted(app="hello", deploy_id=D, time=T, release=7, job_version=6,
                     job_modify_index=1842, outcome="updated"),
    RolloutProgress(app="hello", deploy_id=D, time=T, release=7,
                    nomad_deployment_id=NOMAD_DEPLOYMENT,
                    groups=[GroupProgress(name="web", desired=3, placed=2, healthy=1,
                                          unhealthy=0, canaries=0, promoted=False)],
                    percent=33),
    RolloutHealthy(app="hello", deploy_id=D, time=T, release=7,
                   nomad_deployment_id=NOMAD_DEPLOYMENT),
    RolloutFailed(app="hello", deploy_id=D, time=T, release=7,
                  nomad_deployment_id=NOMAD_DEPLOYMENT,
                  reason="task app exited with code 1 twice after starting",
                  allocations=[AllocationFailure(
                      alloc_id="0c9b1e52-3f7e-4d0a-8f8b-2a1c9d7e6f50", task="app",
                      summary="exited with code 1", exit_code=1,
                      task_events=["Started: Task started by client",
                                   "Terminated: Exit Code: 1",
                                   "Restarting: Task restarting in 1s"],
                      check_output=None,
                      log_tail=["panic: DATABASE_URL is not set"])]),
    RollbackStarted(app="hello", deploy_id=D, time=T, release=7, to_release=6, automatic=True,
                    reason="task app exited with code 1 twice after starting"),
    RollbackSucceeded(app="hello", deploy_id=D, time=T, release=7, to_release=6, new_release=8),
    RollbackFailed(app="hello", deploy_id=D, time=T, release=7, to_release=6,
                   reason="rollback release v8: image pull failed: manifest unknown",
                   original_reason="task app exited with code 1 twice after starting"),
]
