"""When a Nomad job that differs from the desired one counts as drift."""

from __future__ import annotations

from typing import Any

from services.scheduler.drift import drift_reason


def job(release: str = "3", deploy: str = "d3", spec: str = "h1", **extra: Any) -> dict[str, Any]:
    return {"ID": "web", "Meta": {"shaman_release": release, "shaman_deploy_id": deploy,
                                  "shaman_spec": spec}, **extra}


def test_new_release_rolling_out_is_not_drift() -> None:
    assert drift_reason(job(), job(release="2", deploy="d2", spec="h0"), "Edited",
                        submitted=False) is None
    assert drift_reason(job(), None, "Added", submitted=False) is None


def test_missing_job_after_submission_is_drift() -> None:
    assert "deleted" in (drift_reason(job(), None, "Added", submitted=True) or "")


def test_stopped_job_is_always_drift() -> None:
    assert "stopped" in (drift_reason(job(), job(Stop=True), "None", submitted=False) or "")


def test_other_release_after_submission_is_drift() -> None:
    reason = drift_reason(job(), job(release="1", deploy="d1", spec="h"), "Edited",
                          submitted=True)
    assert reason == "job replaced outside Shaman (it ran release v1)"
    assert "did not render" in (drift_reason(job(), {"Meta": {}}, "Edited", submitted=True) or "")


def test_edit_in_place_is_drift_but_a_new_spec_is_not() -> None:
    assert drift_reason(job(), job(), "Edited", submitted=True) == "job edited outside Shaman"
    assert drift_reason(job(), job(), "None", submitted=True) is None
    # Same release, other spec hash: a scale or a new rendering, done by Shaman.
    assert drift_reason(job(spec="h2"), job(spec="h1"), "Edited", submitted=True) is None
