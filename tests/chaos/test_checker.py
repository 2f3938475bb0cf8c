"""The invariant checker itself, on hand-made runs: it must see each kind of violation.

Pure unit tests (no servers): a clean run passes, and every invariant the chaos scenarios
rely on is shown to fail when its evidence is planted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.records import DeployRecord, ReleaseRecord, RollbackState, StatusChange
from tests.chaos.history import History
from tests.chaos.invariants import RunData, check
from tests.chaos.observe import JobVersion
from tests.chaos.snapshot import Snapshot, StoredMessage

APP = "app-a"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _deploy(deploy_id: str, *steps: str, release: int | None = 1, **kw: object) -> DeployRecord:
    history = [StatusChange(status=s, time=T0 + timedelta(seconds=i)) for i, s in enumerate(steps)]
    return DeployRecord(id=deploy_id, app=APP, kind="deploy", status=steps[-1],  # type: ignore[arg-type]
                        release=release, history=history, job_modify_index=10, job_version=0,
                        **kw)  # type: ignore[arg-type]


def _release(version: int, deploy_id: str) -> ReleaseRecord:
    return ReleaseRecord(app=APP, version=version, kind="deploy", description="",
                         created_by="t", deploy_id=deploy_id, image="r/a@sha256:x",
                         digest="sha256:x")


def _event(seq: int, **fields: object) -> StoredMessage:
    data = {"app": APP, "time": (T0 + timedelta(seconds=seq)).isoformat(), **fields}
    return StoredMessage("SHAMAN_EVENTS", seq, f"shaman.events.{APP}.{fields['type']}",
                         json.dumps(data).encode(), {})


def _run(history: History | None = None) -> RunData:
    """A clean run: one accepted deploy, healthy, one release, one job version."""
    history = history or History()
    op = history.invoke("c", "deploy", APP, {"path": f"/v1/apps/{APP}/deploys"})
    history.complete(op, "ok", status=202, body={"id": "d-1"})
    snap = Snapshot(
        deploys={"d-1": _deploy("d-1", "pending", "building", "deploying", "healthy")},
        releases={f"{APP}.1": _release(1, "d-1")},
        messages=[_event(1, type="rollout.submitted", deploy_id="d-1", release=1),
                  _event(2, type="deploy.finished", deploy_id="d-1", status="healthy")],
    )
    versions = {APP: {0: JobVersion(APP, 0, "1", "d-1", False, 10, 1)}}
    return RunData(history=history, snapshot=snap, apps={APP}, nomad_versions=versions,
                   nomad_jobs={APP: {"Version": 0}})


def _kinds(run: RunData) -> set[str]:
    return {v.invariant for v in check(run).violations}


def test_a_clean_run_passes() -> None:
    verdict = check(_run())
    assert verdict.ok, verdict.report()
    assert verdict.stats["accepted"] == 1 and verdict.stats["healthy"] == 1


def test_an_accepted_deploy_that_never_ends_is_lost() -> None:
    run = _run()
    run.snapshot.deploys["d-1"] = _deploy("d-1", "pending", "building")
    verdict = check(run)
    assert "lost" in {v.invariant for v in verdict.violations}
    assert verdict.stats["lost"] == 1


def test_two_deploy_finished_events_are_a_duplicate() -> None:
    run = _run()
    run.snapshot.messages.append(_event(3, type="deploy.finished", deploy_id="d-1",
                                        status="healthy"))
    verdict = check(run)
    assert verdict.stats["duplicated"] == 1, verdict.report()


def test_a_later_outcome_may_have_its_own_deploy_finished() -> None:
    """Healthy, then a crash loop rolled it back: one deploy.finished per status is right;
    the same status twice, or an order the state machine forbids, is not."""
    run = _run()
    run.snapshot.deploys["d-1"] = _deploy(
        "d-1", "pending", "building", "deploying", "healthy", "rolled_back",
        rollback=RollbackState(requested_at=T0, reason="crash loop", outcome="succeeded"))
    run.snapshot.messages.append(_event(3, type="deploy.finished", deploy_id="d-1",
                                        status="rolled_back"))
    assert "outcome" not in _kinds(run)
    run.snapshot.messages.append(_event(4, type="deploy.finished", deploy_id="d-1",
                                        status="healthy"))
    assert "outcome" in _kinds(run)


def test_a_missing_deploy_finished_is_seen() -> None:
    run = _run()
    run.snapshot.messages.pop()
    assert "outcome" in _kinds(run)


def test_a_step_after_the_outcome_is_seen() -> None:
    run = _run()
    run.snapshot.deploys["d-1"] = _deploy("d-1", "pending", "deploying", "superseded",
                                          "healthy")
    assert "terminal" in _kinds(run)


def test_a_release_in_two_job_versions_is_a_duplicate() -> None:
    run = _run()
    run.nomad_versions[APP][1] = JobVersion(APP, 1, "1", "d-1", False, 11, 1)
    verdict = check(run)
    assert verdict.stats["duplicated"] == 1, verdict.report()


def test_a_job_version_nobody_recorded_is_seen() -> None:
    run = _run()
    run.snapshot.messages = [m for m in run.snapshot.messages if b"rollout.submitted" not in m.data]
    assert "submission" in _kinds(run)


def test_two_rollbacks_of_one_deploy_are_a_duplicate() -> None:
    run = _run()
    rollback = RollbackState(requested_at=T0, reason="bad", to_release=1,
                             deploy_id="d-1-rollback", outcome="succeeded")
    run.snapshot.deploys["d-1"] = _deploy("d-1", "pending", "deploying", "failed",
                                          "rolled_back", rollback=rollback)
    run.snapshot.messages[-1] = _event(2, type="deploy.finished", deploy_id="d-1",
                                       status="rolled_back")
    for seq in (5, 6):
        run.snapshot.messages.append(_event(seq, type="rollback.started", deploy_id="d-1"))
    verdict = check(run)
    assert verdict.stats["duplicated"] == 1, verdict.report()


def test_a_false_drift_report_is_seen() -> None:
    run = _run()
    run.snapshot.messages.append(_event(7, type="drift.detected", deploy_id="d-1", release=1,
                                        description="job missing from Nomad"))
    assert "drift" in _kinds(run)


def test_a_secret_marker_in_a_log_is_seen(tmp_path: Path) -> None:
    run = _run()
    log = tmp_path / "api.log"
    log.write_text('{"event": "oops", "value": "marker-123"}\n')
    run.logs, run.markers = [log], ["marker-123"]
    verdict = check(run)
    assert [v.subject for v in verdict.violations] == ["log"]


def test_a_500_and_a_202_while_nats_was_down_are_seen() -> None:
    history = History()
    run = _run(history)
    history.fault("kill", "nats")
    history._t0 -= 2.0  # the calls below start 2 s after the kill (past the margin)
    for status in (500, 202, 503):
        op = history.invoke("c", "get_app", APP, {"path": f"/v1/apps/{APP}"})
        history.complete(op, "fail" if status >= 500 else "ok", status=status,
                         headers={"Retry-After": "1"})
    history.fault("start", "nats")
    api = [v.detail for v in check(run).violations if v.invariant == "api"]
    assert len(api) == 3, api  # the 500 itself, and the 500 and the 202 while NATS was down
