"""Contract: job registration, versions, check-and-set, plan, revert, stable, stop."""

from __future__ import annotations

import copy
from typing import Any

import nomad
import pytest
from nomad.api import exceptions as nx

from .conftest import MS, SEC, service_job, wait_until


def latest_deployment(client: nomad.Nomad, job_id: str, status: str,
                      timeout: float = 15.0) -> dict[str, Any]:
    def check() -> Any:
        dep = client.job.get_deployment(job_id)
        return dep if dep and dep["Status"] == status else None

    return wait_until(check, timeout, what=f"deployment of {job_id} {status}")  # type: ignore[no-any-return]


def test_register_canonicalizes_and_injects_default_update(client: nomad.Nomad,
                                                           job_id: str) -> None:
    job = service_job(job_id)
    del job["TaskGroups"][0]["Update"]
    resp = client.jobs.register_job({"Job": job})
    assert resp["EvalID"] and resp["JobModifyIndex"] > 0
    stored = client.job.get_job(job_id)
    assert stored["Version"] == 0
    assert stored["Priority"] == 50 and stored["Region"] == "global"
    assert stored["Namespace"] == "default" and stored["JobModifyIndex"] == resp["JobModifyIndex"]
    update = stored["TaskGroups"][0]["Update"]
    assert update["MaxParallel"] == 1 and update["HealthCheck"] == "checks"
    assert update["MinHealthyTime"] == 10 * SEC and update["HealthyDeadline"] == 300 * SEC
    assert update["ProgressDeadline"] == 600 * SEC and update["AutoRevert"] is False
    ev = client.evaluation.get_evaluation(resp["EvalID"])
    assert ev["TriggeredBy"] == "job-register" and ev["JobID"] == job_id
    client.job.deregister_job(job_id, purge=True)


def test_unchanged_reregister_creates_no_version_but_an_eval(client: nomad.Nomad,
                                                             job_id: str) -> None:
    job = service_job(job_id)
    first = client.jobs.register_job({"Job": job})
    latest_deployment(client, job_id, "successful")
    second = client.jobs.register_job({"Job": copy.deepcopy(job)})
    assert second["EvalID"] and second["EvalID"] != first["EvalID"]
    versions = client.job.get_versions(job_id)["Versions"]
    assert [v["Version"] for v in versions] == [0]
    assert client.job.get_job(job_id)["JobModifyIndex"] == first["JobModifyIndex"]
    assert len(client.job.get_deployments(job_id)) == 1
    # A spec change is a new version; versions are newest first.
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    assert [v["Version"] for v in client.job.get_versions(job_id)["Versions"]] == [1, 0]
    client.job.deregister_job(job_id, purge=True)


def test_check_and_set_conflicts(client: nomad.Nomad, job_id: str) -> None:
    job = service_job(job_id)
    with pytest.raises(nx.BaseNomadException) as exc:
        client.job.register_job(job_id, {"Job": job, "EnforceIndex": True,
                                         "JobModifyIndex": 5})
    assert exc.value.nomad_resp.status_code == 500
    assert exc.value.nomad_resp.text.startswith(
        "Enforcing job modify index 5: job does not exist")
    created = client.job.register_job(job_id, {"Job": job, "EnforceIndex": True,
                                               "JobModifyIndex": 0})
    jmi = created["JobModifyIndex"]
    with pytest.raises(nx.BaseNomadException) as exc:
        client.job.register_job(job_id, {"Job": job, "EnforceIndex": True,
                                         "JobModifyIndex": 0})
    assert exc.value.nomad_resp.text.startswith(
        "Enforcing job modify index 0: job already exists")
    with pytest.raises(nx.BaseNomadException) as exc:
        client.job.register_job(job_id, {"Job": job, "EnforceIndex": True,
                                         "JobModifyIndex": jmi + 1000})
    assert exc.value.nomad_resp.status_code == 500
    assert exc.value.nomad_resp.text.startswith(
        f"Enforcing job modify index {jmi + 1000}: job exists with conflicting job modify "
        f"index: {jmi}")
    job["Meta"]["release"] = "2"
    plan = client.job.plan_job(job_id, {"Job": job}, diff=True)
    assert plan["JobModifyIndex"] == jmi
    ok = client.job.register_job(job_id, {"Job": job, "EnforceIndex": True,
                                          "JobModifyIndex": plan["JobModifyIndex"]})
    assert ok["JobModifyIndex"] > jmi
    client.job.deregister_job(job_id, purge=True)


def test_plan_reports_diff_and_annotations_without_changing_state(client: nomad.Nomad,
                                                                  job_id: str) -> None:
    job = service_job(job_id, count=2)
    new = client.job.plan_job(job_id, {"Job": job}, diff=True)
    assert new["JobModifyIndex"] == 0
    assert new["Diff"]["Type"] == "Added"
    assert new["Annotations"]["DesiredTGUpdates"]["web"]["Place"] == 2
    with pytest.raises(nx.URLNotFoundNomadException):
        client.job.get_job(job_id)
    client.jobs.register_job({"Job": job})
    latest_deployment(client, job_id, "successful")
    job["TaskGroups"][0]["Tasks"][0]["Env"]["RELEASE"] = "2"
    plan = client.job.plan_job(job_id, {"Job": job}, diff=True)
    tg = plan["Diff"]["TaskGroups"][0]
    assert plan["Diff"]["Type"] == "Edited" and tg["Type"] == "Edited"
    assert tg["Tasks"][0]["Annotations"] == ["forces create/destroy update"]
    updates = plan["Annotations"]["DesiredTGUpdates"]["web"]
    assert updates["DestructiveUpdate"] == 1 and updates["Ignore"] == 1
    assert [v["Version"] for v in client.job.get_versions(job_id)["Versions"]] == [0]
    client.job.deregister_job(job_id, purge=True)


def test_revert_and_stable(client: nomad.Nomad, job_id: str) -> None:
    job = service_job(job_id, count=1)
    client.jobs.register_job({"Job": job})
    latest_deployment(client, job_id, "successful")
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    with pytest.raises(nx.BaseNomadException) as exc:
        client.job.revert_job(job_id, 1)
    assert exc.value.nomad_resp.text == "can't revert to current version"
    with pytest.raises(nx.BaseNomadException) as exc:
        client.job.revert_job(job_id, 0, enforce_prior_version=7)
    assert exc.value.nomad_resp.text == "Current job has version 1; enforcing version 7"
    with pytest.raises(nx.BaseNomadException) as exc:
        client.job.revert_job(job_id, 42)
    assert "at version 42 not found" in exc.value.nomad_resp.text
    resp = client.job.revert_job(job_id, 0, enforce_prior_version=1)
    assert resp["EvalID"]
    current = client.job.get_job(job_id)
    assert current["Version"] == 2 and current["Meta"]["release"] == "1"
    assert current["Stable"] is False
    dep = latest_deployment(client, job_id, "successful")
    assert dep["JobVersion"] == 2
    versions = {v["Version"]: v for v in client.job.get_versions(job_id)["Versions"]}
    assert versions[2]["Stable"] is True
    stable = client.job.stable_job(job_id, 1, True)
    assert stable["JobModifyIndex"] > 0
    versions = {v["Version"]: v for v in client.job.get_versions(job_id)["Versions"]}
    assert versions[1]["Stable"] is True
    client.job.deregister_job(job_id, purge=True)


def test_stop_and_purge(client: nomad.Nomad, job_id: str) -> None:
    client.jobs.register_job({"Job": service_job(job_id, count=1)})
    latest_deployment(client, job_id, "successful")
    resp = client.job.deregister_job(job_id)
    assert resp["EvalID"]
    job = client.job.get_job(job_id)
    assert job["Stop"] is True and job["Version"] == 1

    def all_stopped() -> bool:
        allocs = client.job.get_allocations(job_id)
        return bool(allocs) and all(a["DesiredStatus"] == "stop"
                                    and a["ClientStatus"] == "complete" for a in allocs)

    wait_until(all_stopped, 10, what="allocs stopped")
    wait_until(lambda: client.job.get_job(job_id)["Status"] == "dead", 10, what="job dead")
    client.job.deregister_job(job_id, purge=True)
    with pytest.raises(nx.URLNotFoundNomadException):
        client.job.get_job(job_id)
    assert job_id not in [j["ID"] for j in client.jobs.get_jobs(prefix=job_id)]


def test_list_summary_and_scale(client: nomad.Nomad, job_id: str) -> None:
    client.jobs.register_job({"Job": service_job(job_id, count=2)})
    latest_deployment(client, job_id, "successful")
    stubs = client.jobs.get_jobs(prefix=job_id)
    assert [s["ID"] for s in stubs] == [job_id]
    assert stubs[0]["JobSummary"]["Summary"]["web"]["Running"] == 2
    filtered = client.jobs.get_jobs(filter_=f'ID == "{job_id}" and Status == "running"')
    assert [s["ID"] for s in filtered] == [job_id]
    summary = client.job.get_summary(job_id)
    assert summary["Summary"]["web"]["Running"] == 2
    client.job.request(job_id, "scale", method="post",
                       json={"Count": 3, "Target": {"Group": "web"}, "Message": "more"})
    assert client.job.get_job(job_id)["TaskGroups"][0]["Count"] == 3
    wait_until(lambda: client.job.get_summary(job_id)["Summary"]["web"]["Running"] == 3, 10,
               what="three running")
    client.job.deregister_job(job_id, purge=True)


def test_validate_endpoint(client: nomad.Nomad, job_id: str) -> None:
    job = service_job(job_id)
    job["TaskGroups"][0]["Update"]["MinHealthyTime"] = 5 * SEC
    job["TaskGroups"][0]["Update"]["HealthyDeadline"] = 1 * SEC
    resp = client.validate.validate_job({"Job": job})
    assert resp.status_code == 200
    body = resp.json()
    assert body["ValidationErrors"] and "Minimum healthy time" in body["Error"]
    good = client.validate.validate_job({"Job": service_job(job_id)})
    assert good.json()["ValidationErrors"] in (None, [])
    with pytest.raises(nx.BaseNomadException) as exc:
        client.jobs.register_job({"Job": job})
    assert exc.value.nomad_resp.status_code == 500
    assert "error" in exc.value.nomad_resp.text and "Minimum healthy time" in \
        exc.value.nomad_resp.text
    _ = MS


def test_unplaceable_job_reports_failed_allocs_and_a_blocked_eval(client: nomad.Nomad,
                                                                   job_id: str) -> None:
    job = service_job(job_id, count=2)
    job["Datacenters"] = ["no-such-dc"]
    plan = client.job.plan_job(job_id, {"Job": job})
    assert set(plan["FailedTGAllocs"]) == {"web"}
    resp = client.jobs.register_job({"Job": job})

    def evaluated() -> Any:
        ev = client.evaluation.get_evaluation(resp["EvalID"])
        return ev if ev["Status"] == "complete" else None

    ev = wait_until(evaluated, 5, what="eval complete")
    assert ev["FailedTGAllocs"]["web"]["CoalescedFailures"] == 1
    blocked = client.evaluation.get_evaluation(ev["BlockedEval"])
    assert blocked["Status"] == "blocked"
    assert client.job.get_allocations(job_id) == []
    assert client.job.get_job(job_id)["Status"] == "pending"
    client.job.deregister_job(job_id, purge=True)
