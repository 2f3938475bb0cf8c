"""Contract: the deployment state machine (rolling, failures, canaries, auto-revert, health)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nomad
import pytest
import requests
from nomad.api import exceptions as nx

from .conftest import MS, SEC, service_job, stays_true, wait_until
from .test_jobs import latest_deployment


def running_versions(client: nomad.Nomad, job_id: str) -> list[int]:
    return sorted(a["JobVersion"] for a in client.job.get_allocations(job_id)
                  if a["DesiredStatus"] == "run" and a["ClientStatus"] == "running")


def test_successful_rolling_deployment(client: nomad.Nomad, job_id: str) -> None:
    job = service_job(job_id, count=3, MaxParallel=1)
    client.jobs.register_job({"Job": job})
    first = latest_deployment(client, job_id, "successful")
    assert first["StatusDescription"] == "Deployment completed successfully"
    assert first["TaskGroups"]["web"]["DesiredTotal"] == 3
    assert first["TaskGroups"]["web"]["HealthyAllocs"] == 3
    assert client.job.get_versions(job_id)["Versions"][0]["Stable"] is True

    job["TaskGroups"][0]["Tasks"][0]["Env"]["RELEASE"] = "2"
    client.jobs.register_job({"Job": job})
    second = wait_until(lambda: (d := client.job.get_deployment(job_id))
                        and d["ID"] != first["ID"] and d, 5, what="a new deployment")
    assert second["JobVersion"] == 1 and second["Status"] == "running"
    assert second["StatusDescription"] == "Deployment is running"
    # MaxParallel=1: never more than one new alloc unhealthy at a time.
    in_flight: list[int] = []

    def observe() -> bool:
        allocs = client.deployment.get_deployment_allocations(second["ID"])
        in_flight.append(len([a for a in allocs if a["DesiredStatus"] == "run" and (
            a["DeploymentStatus"] or {}).get("Healthy") is None]))
        return bool(client.deployment.get_deployment(second["ID"])["Status"] == "successful")

    wait_until(observe, 15, interval=0.03, what="rolling deployment done")
    assert len(in_flight) > 3 and max(in_flight) <= 1
    done = latest_deployment(client, job_id, "successful")
    assert done["TaskGroups"]["web"]["PlacedAllocs"] == 3
    assert running_versions(client, job_id) == [1, 1, 1]
    stopped = [a for a in client.job.get_allocations(job_id) if a["JobVersion"] == 0]
    assert {a["DesiredDescription"] for a in stopped} == {
        "alloc is being updated due to job update"}
    versions = {v["Version"]: v["Stable"] for v in client.job.get_versions(job_id)["Versions"]}
    assert versions == {1: True, 0: True}
    client.job.deregister_job(job_id, purge=True)


def test_failed_deployment_unhealthy_allocations(client: nomad.Nomad, job_id: str,
                                                 control: Callable[..., Any]) -> None:
    job = service_job(job_id, count=2, ProgressDeadline=0)
    client.jobs.register_job({"Job": job})
    latest_deployment(client, job_id, "successful")
    control("behaviors", {"job": job_id, "job_version": 1, "crash_on_start": 1})
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    dep = latest_deployment(client, job_id, "failed")
    assert dep["StatusDescription"] == "Failed due to unhealthy allocations"
    assert dep["JobVersion"] == 1
    failed = [a for a in client.deployment.get_deployment_allocations(dep["ID"])]
    assert failed and failed[0]["ClientStatus"] == "failed"
    assert failed[0]["DeploymentStatus"]["Healthy"] is False
    events = [e["Type"] for e in failed[0]["TaskStates"]["app"]["Events"]]
    assert "Terminated" in events and "Not Restarting" in events
    assert "Alloc Unhealthy" in events
    # No rollback without auto_revert: the job stays at the failed version.
    assert client.job.get_job(job_id)["Version"] == 1
    assert client.job.get_versions(job_id)["Versions"][0]["Stable"] is False
    client.job.deregister_job(job_id, purge=True)


def test_failed_deployment_progress_deadline(client: nomad.Nomad, job_id: str,
                                             control: Callable[..., Any]) -> None:
    job = service_job(job_id, count=1, HealthyDeadline=600 * MS, ProgressDeadline=1200 * MS)
    job["TaskGroups"][0]["ReschedulePolicy"] = {"Unlimited": True, "Delay": 60 * SEC,
                                                "DelayFunction": "constant"}
    control("behaviors", {"job": job_id, "checks": "failing"})
    client.jobs.register_job({"Job": job})
    dep = latest_deployment(client, job_id, "failed", timeout=10)
    assert dep["StatusDescription"] == "Failed due to progress deadline"
    alloc = client.deployment.get_deployment_allocations(dep["ID"])[0]
    assert alloc["DeploymentStatus"]["Healthy"] is False
    unhealthy = [e for e in alloc["TaskStates"]["app"]["Events"]
                 if e["Type"] == "Alloc Unhealthy"]
    assert unhealthy and unhealthy[0]["DisplayMessage"].startswith(
        "Services not healthy by deadline")
    client.job.deregister_job(job_id, purge=True)


def test_canary_then_manual_promote(client: nomad.Nomad, job_id: str) -> None:
    job = service_job(job_id, count=2, Canary=1)
    client.jobs.register_job({"Job": job})
    first = latest_deployment(client, job_id, "successful")
    assert first["TaskGroups"]["web"]["DesiredCanaries"] == 0
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    dep = wait_until(lambda: (d := client.job.get_deployment(job_id)) and d["ID"] != first["ID"]
                     and d, 5, what="canary deployment")
    assert dep["StatusDescription"] == "Deployment is running but requires manual promotion"
    assert dep["TaskGroups"]["web"]["DesiredCanaries"] == 1

    def canary_healthy() -> Any:
        d = client.deployment.get_deployment(dep["ID"])
        return d if d["TaskGroups"]["web"]["HealthyAllocs"] == 1 else None

    wait_until(canary_healthy, 10, what="healthy canary")
    # Old allocs keep running beside the canary; nothing more rolls until promotion.
    assert running_versions(client, job_id) == [0, 0, 1]
    canary_id = dep_canaries = client.deployment.get_deployment(dep["ID"])["TaskGroups"]["web"][
        "PlacedCanaries"]
    assert len(dep_canaries) == 1
    client.deployment.promote_deployment_all(dep["ID"])
    promoted = client.deployment.get_deployment(dep["ID"])
    assert promoted["TaskGroups"]["web"]["Promoted"] is True
    assert client.allocation.get_allocation(canary_id[0])["DeploymentStatus"]["Canary"] is False
    latest_deployment(client, job_id, "successful")
    assert running_versions(client, job_id) == [1, 1]
    with pytest.raises(nx.BaseNomadException) as exc:
        client.deployment.promote_deployment_all(dep["ID"])
    assert exc.value.nomad_resp.text == "can't promote terminal deployment"
    client.job.deregister_job(job_id, purge=True)


def test_canary_auto_promote(client: nomad.Nomad, job_id: str) -> None:
    job = service_job(job_id, count=2, Canary=1, AutoPromote=True)
    client.jobs.register_job({"Job": job})
    first = latest_deployment(client, job_id, "successful")
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    dep = wait_until(lambda: (d := client.job.get_deployment(job_id)) and d["ID"] != first["ID"]
                     and d, 5, what="canary deployment")
    assert dep["StatusDescription"] == "Deployment is running pending automatic promotion"
    done = latest_deployment(client, job_id, "successful")
    assert done["TaskGroups"]["web"]["Promoted"] is True
    client.job.deregister_job(job_id, purge=True)


def test_auto_revert_to_stable_version(client: nomad.Nomad, job_id: str,
                                       control: Callable[..., Any]) -> None:
    job = service_job(job_id, count=1, AutoRevert=True, ProgressDeadline=0)
    client.jobs.register_job({"Job": job})
    latest_deployment(client, job_id, "successful")
    control("behaviors", {"job": job_id, "job_version": 1, "crash_on_start": 1})
    job["Meta"]["release"] = "bad"
    client.jobs.register_job({"Job": job})
    failed = wait_until(lambda: [d for d in client.job.get_deployments(job_id)
                                 if d["Status"] == "failed"], 10, what="failed deployment")[0]
    assert failed["StatusDescription"] == (
        "Failed due to unhealthy allocations - rolling back to job version 0")
    reverted = latest_deployment(client, job_id, "successful")
    assert reverted["JobVersion"] == 2
    current = client.job.get_job(job_id)
    assert current["Version"] == 2 and current["Meta"]["release"] == "1"
    assert running_versions(client, job_id) == [2]
    client.job.deregister_job(job_id, purge=True)


def test_auto_revert_without_stable_version(client: nomad.Nomad, job_id: str,
                                            control: Callable[..., Any]) -> None:
    control("behaviors", {"job": job_id, "crash_on_start": 1})
    job = service_job(job_id, count=1, AutoRevert=True, ProgressDeadline=0)
    client.jobs.register_job({"Job": job})
    dep = latest_deployment(client, job_id, "failed")
    assert dep["StatusDescription"] == (
        "Failed due to unhealthy allocations - no stable job version to auto revert to")
    client.job.deregister_job(job_id, purge=True)


def test_newer_version_cancels_active_deployment(client: nomad.Nomad, job_id: str,
                                                 control: Callable[..., Any]) -> None:
    control("behaviors", {"job": job_id, "job_version": 0, "hang": True})
    job = service_job(job_id, count=1)
    client.jobs.register_job({"Job": job})
    first = wait_until(lambda: client.job.get_deployment(job_id), 5, what="deployment")
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    old = wait_until(lambda: (d := client.deployment.get_deployment(first["ID"]))
                     ["Status"] == "cancelled" and d, 5, what="cancelled")
    assert old["StatusDescription"] == "Cancelled due to newer version of job"
    latest_deployment(client, job_id, "successful")
    client.job.deregister_job(job_id, purge=True)


def test_manual_health_pause_and_fail(client: nomad.Nomad, job_id: str) -> None:
    job = service_job(job_id, count=2, HealthCheck="manual", ProgressDeadline=0)
    client.jobs.register_job({"Job": job})
    dep = wait_until(lambda: client.job.get_deployment(job_id), 5, what="deployment")
    allocs = wait_until(lambda: len(a := client.deployment.get_deployment_allocations(
        dep["ID"])) == 2 and a, 5, what="allocs")
    paused = client.deployment.pause_deployment(dep["ID"], True)
    assert paused["DeploymentModifyIndex"] > 0
    assert client.deployment.get_deployment(dep["ID"])["StatusDescription"] == \
        "Deployment is paused"
    client.deployment.pause_deployment(dep["ID"], False)
    assert client.deployment.get_deployment(dep["ID"])["Status"] == "running"
    with pytest.raises(nx.BaseNomadException) as exc:
        client.deployment.deployment_allocation_health(dep["ID"])
    assert exc.value.nomad_resp.text == \
        "must specify at least one healthy/unhealthy allocation ID"
    # python-nomad sends "UnHealthyAllocationIDs": keys match case-insensitively.
    client.deployment.deployment_allocation_health(
        dep["ID"], healthy_allocations=[allocs[0]["ID"]],
        unhealthy_allocations=[allocs[1]["ID"]])
    failed = client.deployment.get_deployment(dep["ID"])
    assert failed["Status"] == "failed"
    assert failed["StatusDescription"] == "Failed due to unhealthy allocations"
    assert failed["TaskGroups"]["web"]["HealthyAllocs"] == 1
    assert failed["TaskGroups"]["web"]["UnhealthyAllocs"] == 1
    with pytest.raises(nx.BaseNomadException) as exc:
        client.deployment.fail_deployment(dep["ID"])
    assert exc.value.nomad_resp.status_code == 500
    assert exc.value.nomad_resp.text == "can't fail terminal deployment"
    client.job.deregister_job(job_id, purge=True)


def test_user_fail_deployment(client: nomad.Nomad, job_id: str,
                              control: Callable[..., Any]) -> None:
    control("behaviors", {"job": job_id, "hang": True})
    client.jobs.register_job({"Job": service_job(job_id, count=1)})
    dep = wait_until(lambda: client.job.get_deployment(job_id), 5, what="deployment")
    resp = client.deployment.fail_deployment(dep["ID"])
    assert resp["EvalID"] and resp["DeploymentModifyIndex"] > 0
    failed = client.deployment.get_deployment(dep["ID"])
    assert failed["Status"] == "failed"
    assert failed["StatusDescription"] == "Deployment marked as failed"
    client.job.deregister_job(job_id, purge=True)


def test_restart_policy_and_reschedule(client: nomad.Nomad, job_id: str,
                                       control: Callable[..., Any]) -> None:
    job = service_job(job_id, count=1, MaxParallel=0)
    group = job["TaskGroups"][0]
    group["RestartPolicy"] = {"Attempts": 2, "Interval": 60 * SEC, "Delay": 50 * MS,
                              "Mode": "fail"}
    group["ReschedulePolicy"] = {"Attempts": 1, "Interval": 60 * SEC, "Delay": 100 * MS,
                                 "DelayFunction": "constant", "Unlimited": False}
    control("behaviors", {"job": job_id, "crash_on_start": 3})
    client.jobs.register_job({"Job": job})
    assert client.job.get_deployment(job_id) is None  # MaxParallel 0: no deployment

    def two_failed() -> Any:
        allocs = client.job.get_allocations(job_id)
        return allocs if len([a for a in allocs if a["ClientStatus"] == "failed"]) == 2 \
            else None

    allocs = sorted(wait_until(two_failed, 10, what="original and replacement failed"),
                    key=lambda a: a["CreateIndex"])
    first, second = allocs
    assert first["TaskStates"]["app"]["Restarts"] == 2
    assert first["NextAllocation"] == second["ID"]
    assert second["PreviousAllocation"] == first["ID"]
    assert len(second["RescheduleTracker"]["Events"]) == 1
    not_restarting = next(e for e in first["TaskStates"]["app"]["Events"]
                      if e["Type"] == "Not Restarting")
    assert not_restarting["DisplayMessage"] == \
        'Exceeded allowed attempts 2 in interval 1m0s and mode is "fail"'
    # Attempts=1 is used up: no third alloc.
    stays_true(lambda: len(client.job.get_allocations(job_id)) == 2, 0.5,
               what="no third alloc")
    client.job.deregister_job(job_id, purge=True)


def test_services_and_alloc_stop(client: nomad.Nomad, nomad_url: str, job_id: str) -> None:
    client.jobs.register_job({"Job": service_job(job_id, count=2)})
    latest_deployment(client, job_id, "successful")
    name = f"{job_id}-web"
    regs = wait_until(lambda: len(r := requests.get(f"{nomad_url}/v1/service/{name}",
                                                    timeout=5).json()) == 2 and r, 5,
                      what="two registrations")
    allocs = {a["ID"]: a for a in client.job.get_allocations(job_id)}
    for reg in regs:
        alloc = client.allocation.get_allocation(reg["AllocID"])
        port = alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
        assert reg["Address"] == "127.0.0.1" and reg["Port"] == port
        assert reg["JobID"] == job_id and reg["AllocID"] in allocs
    listed = requests.get(f"{nomad_url}/v1/services", timeout=5).json()
    assert any(s["ServiceName"] == name for ns in listed for s in ns["Services"])

    victim = regs[0]["AllocID"]
    resp = client.allocation.stop_allocation(victim)
    assert resp["EvalID"]

    def replaced() -> bool:
        allocs = client.job.get_allocations(job_id)
        running = [a for a in allocs if a["ClientStatus"] == "running"
                   and a["DesiredStatus"] == "run"]
        return len(running) == 2 and victim not in {a["ID"] for a in running}

    wait_until(replaced, 10, what="stopped alloc replaced")
    stopped = client.allocation.get_allocation(victim)
    assert stopped["DesiredStatus"] == "stop" and stopped["ClientStatus"] == "complete"
    wait_until(lambda: victim not in {r["AllocID"] for r in requests.get(
        f"{nomad_url}/v1/service/{name}", timeout=5).json()}, 5, what="deregistered")
    client.job.deregister_job(job_id, purge=True)


def test_driver_failure_and_stuck_watcher(client: nomad.Nomad, job_id: str,
                                          control: Callable[..., Any]) -> None:
    control("behaviors", {"job": job_id, "start_error": "failed to pull image x: boom"})
    job = service_job(job_id, count=1, HealthyDeadline=500 * MS, ProgressDeadline=1 * SEC)
    control("watcher", {"paused": True})
    try:
        client.jobs.register_job({"Job": job})
        alloc = wait_until(lambda: [a for a in client.job.get_allocations(job_id)
                                    if a["ClientStatus"] == "failed"], 5, what="failed")[0]
        events = alloc["TaskStates"]["app"]["Events"]
        failure = next(e for e in events if e["Type"] == "Driver Failure")
        assert failure["DriverError"] == "failed to pull image x: boom"
        # With the watcher frozen the deployment stays running past its deadline.
        stays_true(lambda: client.job.get_deployment(job_id)["Status"] == "running", 1.3,
                   what="frozen deployment still running")
    finally:
        control("watcher", {"paused": False})
    dep = latest_deployment(client, job_id, "failed", timeout=5)
    assert dep["StatusDescription"].startswith("Failed due to")
    client.job.deregister_job(job_id, purge=True)


def test_canary_promote_refused_until_healthy(client: nomad.Nomad, job_id: str,
                                              control: Callable[..., Any]) -> None:
    job = service_job(job_id, count=2, Canary=1)
    client.jobs.register_job({"Job": job})
    first = latest_deployment(client, job_id, "successful")
    control("behaviors", {"job": job_id, "job_version": 1, "hang": True})
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    dep = wait_until(lambda: (d := client.job.get_deployment(job_id)) and d["ID"] != first["ID"]
                     and d["TaskGroups"]["web"]["PlacedCanaries"] and d, 5,
                     what="canary placed")
    with pytest.raises(nx.BaseNomadException) as exc:
        client.deployment.promote_deployment_groups(dep["ID"], ["web"])
    assert exc.value.nomad_resp.status_code == 500
    assert exc.value.nomad_resp.text == 'Task group "web" has 0/1 healthy allocations'
    # Failing it stops the un-promoted canary and leaves the old version serving.
    client.deployment.fail_deployment(dep["ID"])
    canary = client.allocation.get_allocation(dep["TaskGroups"]["web"]["PlacedCanaries"][0])
    assert canary["DesiredStatus"] == "stop"
    assert canary["DesiredDescription"] == "alloc not needed due to job update"
    assert running_versions(client, job_id) == [0, 0]
    client.job.deregister_job(job_id, purge=True)
