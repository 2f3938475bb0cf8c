"""The deployment watcher and the deployment write operations.

Reacts to allocation health: fails a deployment on unhealthy allocations (at once
when progress_deadline is 0 or the reschedule policy is exhausted, otherwise marks
the alloc for replacement), auto-promotes when every canary is healthy, and fails it
when a group's RequireProgressBy passes (`Failed due to progress deadline`). Also the
user operations: promote, fail, pause/resume, manual allocation health. Failure
applies auto_revert exactly as nomad-api.md §2 describes, with Nomad's description
suffixes. Placing the next batch and marking success belong to the scheduler
(driven by the evals created here and by client updates).
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .canonicalize import spec_key
from .scheduler import (
    ALLOC_NOT_NEEDED_CANARY,
    DESC_AUTO_PROMOTION,
    DESC_NEEDS_PROMOTION,
    DESC_RUNNING,
    reschedule_time,
)
from .state import Txn, alloc_terminal, deployment_active, now_ns

if TYPE_CHECKING:
    from .server import Server

FAILED_UNHEALTHY = "Failed due to unhealthy allocations"
FAILED_PROGRESS = "Failed due to progress deadline"
FAILED_USER = "Deployment marked as failed"
DESC_PAUSED = "Deployment is paused"
ZERO_TIME = "0001-01-01T00:00:00Z"


class DeploymentError(Exception):
    """A deployment operation Nomad refuses (HTTP 500 with this text)."""


def rfc3339_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{frac:09d}Z"


def parse_rfc3339(text: str | None) -> float | None:
    """RFC3339 (up to ns precision) -> unix seconds; None for the zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(main + "+00:00").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def requires_promotion(dep: dict[str, Any]) -> bool:
    return any(ds["DesiredCanaries"] > 0 and not ds["Promoted"]
               for ds in dep["TaskGroups"].values())


def running_description(dep: dict[str, Any]) -> str:
    if requires_promotion(dep):
        canary_groups = [ds for ds in dep["TaskGroups"].values() if ds["DesiredCanaries"] > 0]
        if canary_groups and all(ds["AutoPromote"] for ds in canary_groups):
            return DESC_AUTO_PROMOTION
        return DESC_NEEDS_PROMOTION
    return DESC_RUNNING


class DeploymentWatcher:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.paused_watcher = False  # control surface: a stuck deployment, as in #11267

    @property
    def state(self) -> Any:
        return self.server.state

    def kick(self, dep_id: str) -> None:
        asyncio.get_running_loop().call_soon(self.evaluate, dep_id)

    def close(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()

    # ---- the watch loop, one pass per change -------------------------------------------
    def evaluate(self, dep_id: str) -> None:
        dep = self.state.deployments.get(dep_id)
        if dep is None or not deployment_active(dep) or dep["Status"] == "paused":
            self._cancel_timer(dep_id)
            return
        if self.paused_watcher:
            return
        allocs = [a for a in self.state.job_allocs((dep["Namespace"], dep["JobID"]))
                  if a.get("DeploymentID") == dep_id]
        # Unhealthy allocations.
        to_reschedule: list[dict[str, Any]] = []
        for a in allocs:
            health = (a.get("DeploymentStatus") or {}).get("Healthy")
            if health is not False or a["DesiredStatus"] != "run":
                continue
            if (a.get("DesiredTransition") or {}).get("Reschedule") or a.get("NextAllocation"):
                continue
            ds = dep["TaskGroups"].get(a["TaskGroup"])
            if ds is None:
                continue
            if ds["ProgressDeadline"] == 0:
                self.fail(dep, FAILED_UNHEALTHY, groups={a["TaskGroup"]})
                return
            job = self.state.jobs.get((dep["Namespace"], dep["JobID"]))
            policy = None
            if job is not None:
                from .canonicalize import find_group

                policy = (find_group(job, a["TaskGroup"]) or {}).get("ReschedulePolicy")
            if reschedule_time(a, policy, now_ns()) is None:
                self.fail(dep, FAILED_UNHEALTHY, groups={a["TaskGroup"]})
                return
            to_reschedule.append(a)
        if to_reschedule:
            txn = self.state.txn("AllocationUpdateDesiredStatus")
            for a in to_reschedule:
                transition = dict(a.get("DesiredTransition") or {})
                transition["Reschedule"] = True
                a["DesiredTransition"] = transition
                txn.put_alloc(a)
            self.server.create_eval(txn, dep["Namespace"], dep["JobID"], "deployment-watcher",
                                    deployment_id=dep_id)
            txn.commit()
        # Auto-promotion once every canary is healthy.
        if requires_promotion(dep):
            canary_groups = {g: ds for g, ds in dep["TaskGroups"].items()
                             if ds["DesiredCanaries"] > 0 and not ds["Promoted"]}
            if all(ds["AutoPromote"] for ds in canary_groups.values()) and all(
                    self._healthy_canaries(dep, g, allocs) >= ds["DesiredCanaries"]
                    for g, ds in canary_groups.items()):
                self.promote(dep, None)
                return
        self._arm_timer(dep, allocs)

    def _healthy_canaries(self, dep: dict[str, Any], group: str,
                          allocs: list[dict[str, Any]]) -> int:
        placed = set(dep["TaskGroups"][group]["PlacedCanaries"] or [])
        return sum(1 for a in allocs if a["ID"] in placed and not alloc_terminal(a)
                   and (a.get("DeploymentStatus") or {}).get("Healthy") is True)

    def _arm_timer(self, dep: dict[str, Any], allocs: list[dict[str, Any]]) -> None:
        earliest: float | None = None
        for g, ds in dep["TaskGroups"].items():
            if ds["ProgressDeadline"] == 0:
                continue
            if ds["DesiredCanaries"] > 0 and not ds["Promoted"] and self._healthy_canaries(
                    dep, g, allocs) >= ds["DesiredCanaries"]:
                continue  # waiting for a manual promotion never expires
            if ds["HealthyAllocs"] >= ds["DesiredTotal"] and (ds["DesiredCanaries"] == 0
                                                              or ds["Promoted"]):
                continue
            by = parse_rfc3339(ds["RequireProgressBy"])
            if by is not None and (earliest is None or by < earliest):
                earliest = by
        self._cancel_timer(dep["ID"])
        if earliest is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, earliest - time.time())
        self.timers[dep["ID"]] = loop.call_later(delay, self._deadline, dep["ID"])

    def _cancel_timer(self, dep_id: str) -> None:
        handle = self.timers.pop(dep_id, None)
        if handle is not None:
            handle.cancel()

    def _deadline(self, dep_id: str) -> None:
        self.timers.pop(dep_id, None)
        dep = self.state.deployments.get(dep_id)
        if dep is None or dep["Status"] != "running" or self.paused_watcher:
            return
        allocs = [a for a in self.state.job_allocs((dep["Namespace"], dep["JobID"]))
                  if a.get("DeploymentID") == dep_id]
        now = time.time()
        for g, ds in dep["TaskGroups"].items():
            by = parse_rfc3339(ds["RequireProgressBy"])
            if by is None or ds["ProgressDeadline"] == 0:
                continue
            if ds["DesiredCanaries"] > 0 and not ds["Promoted"] and self._healthy_canaries(
                    dep, g, allocs) >= ds["DesiredCanaries"]:
                continue
            if ds["HealthyAllocs"] >= ds["DesiredTotal"] and (ds["DesiredCanaries"] == 0
                                                              or ds["Promoted"]):
                continue
            if by <= now + 0.001:
                self.fail(dep, FAILED_PROGRESS, groups={g})
                return
        self._arm_timer(dep, allocs)

    # ---- operations ----------------------------------------------------------------
    def fail(self, dep: dict[str, Any], base: str, groups: set[str] | None = None,
             txn: Txn | None = None, op_type: str = "DeploymentStatusUpdate") -> int | None:
        """Mark failed, stop un-promoted canaries, auto-revert. Returns the reverted version."""
        own_txn = txn is None
        if txn is None:
            txn = self.state.txn(op_type)
        key = (dep["Namespace"], dep["JobID"])
        job = self.state.jobs.get(key)
        involved = groups if groups is not None else set(dep["TaskGroups"])
        auto_revert = any(dep["TaskGroups"][g]["AutoRevert"] for g in involved
                          if g in dep["TaskGroups"])
        desc = base
        revert_to: dict[str, Any] | None = None
        if auto_revert and job is not None:
            stable = next((v for v in self.state.versions.get(key, [])
                           if v["Stable"] and v["Version"] != job["Version"]), None)
            if stable is None:
                desc += " - no stable job version to auto revert to"
            elif spec_key(stable) == spec_key(job):
                desc += (f" - not rolling back to stable job version {stable['Version']} "
                         f"as current job has same specification")
            else:
                desc += f" - rolling back to job version {stable['Version']}"
                revert_to = stable
        dep["Status"] = "failed"
        dep["StatusDescription"] = desc
        txn.put_deployment(dep)
        self._cancel_timer(dep["ID"])
        stopped = []
        for ds in dep["TaskGroups"].values():
            if ds["Promoted"] or not ds["PlacedCanaries"]:
                continue
            for aid in ds["PlacedCanaries"]:
                a = self.state.allocs.get(aid)
                if a is not None and not alloc_terminal(a):
                    a["DesiredStatus"] = "stop"
                    a["DesiredDescription"] = ALLOC_NOT_NEEDED_CANARY
                    txn.put_alloc(a)
                    stopped.append(a)
        reverted: int | None = None
        if revert_to is not None:
            new_job = self.server.new_version_from(revert_to, txn)
            reverted = int(revert_to["Version"])
            txn.split()
            self.server.create_eval(txn, new_job["Namespace"], new_job["ID"], "job-register")
        else:
            self.server.create_eval(txn, dep["Namespace"], dep["JobID"], "deployment-watcher",
                                    deployment_id=dep["ID"])
        txn.result["RevertedJobVersion"] = reverted
        if own_txn:
            txn.commit()
        for a in stopped:
            self.server.client.sync(a)
        return reverted

    def promote(self, dep: dict[str, Any], groups: list[str] | None) -> Txn:
        if not deployment_active(dep):
            raise DeploymentError("can't promote terminal deployment")
        allocs = [a for a in self.state.job_allocs((dep["Namespace"], dep["JobID"]))
                  if a.get("DeploymentID") == dep["ID"]]
        targets = groups if groups else [g for g, ds in dep["TaskGroups"].items()
                                         if ds["DesiredCanaries"] > 0]
        if not targets or not any(dep["TaskGroups"].get(g, {}).get("DesiredCanaries")
                                  for g in targets):
            raise DeploymentError("no canaries to promote")
        for g in targets:
            ds = dep["TaskGroups"].get(g)
            if ds is None:
                raise DeploymentError(f"Deployment does not include task group \"{g}\"")
            healthy = self._healthy_canaries(dep, g, allocs)
            if healthy < ds["DesiredCanaries"]:
                raise DeploymentError(f"Task group \"{g}\" has {healthy}/"
                                      f"{ds['DesiredCanaries']} healthy allocations")
        txn = self.state.txn("DeploymentPromotion")
        now = now_ns()
        for g in targets:
            ds = dep["TaskGroups"][g]
            ds["Promoted"] = True
            if ds["ProgressDeadline"]:
                ds["RequireProgressBy"] = rfc3339_ns(now + ds["ProgressDeadline"])
            for aid in ds["PlacedCanaries"] or []:
                a = self.state.allocs.get(aid)
                if a is not None and a.get("DeploymentStatus"):
                    a["DeploymentStatus"] = dict(a["DeploymentStatus"], Canary=False)
                    txn.put_alloc(a)
        dep["StatusDescription"] = running_description(dep)
        txn.put_deployment(dep)
        self.server.create_eval(txn, dep["Namespace"], dep["JobID"], "deployment-watcher",
                                deployment_id=dep["ID"])
        txn.commit()
        self.kick(dep["ID"])
        return txn

    def pause(self, dep: dict[str, Any], pause: bool) -> Txn:
        if not deployment_active(dep):
            raise DeploymentError("can't pause terminal deployment" if pause
                                  else "can't resume terminal deployment")
        txn = self.state.txn("DeploymentStatusUpdate")
        if pause:
            dep["Status"] = "paused"
            dep["StatusDescription"] = DESC_PAUSED
            self._cancel_timer(dep["ID"])
        else:
            dep["Status"] = "running"
            dep["StatusDescription"] = running_description(dep)
            now = now_ns()
            for ds in dep["TaskGroups"].values():
                if ds["ProgressDeadline"] and not ds["RequireProgressBy"].startswith("0001"):
                    ds["RequireProgressBy"] = rfc3339_ns(now + ds["ProgressDeadline"])
        txn.put_deployment(dep)
        if not pause:
            self.server.create_eval(txn, dep["Namespace"], dep["JobID"], "deployment-watcher",
                                    deployment_id=dep["ID"])
        txn.commit()
        self.kick(dep["ID"])
        return txn

    def user_fail(self, dep: dict[str, Any]) -> Txn:
        if not deployment_active(dep):
            raise DeploymentError("can't fail terminal deployment")
        txn = self.state.txn("DeploymentStatusUpdate")
        self.fail(dep, FAILED_USER, groups=None, txn=txn)
        txn.commit()
        return txn

    def set_health(self, dep: dict[str, Any], healthy: list[str],
                   unhealthy: list[str]) -> Txn:
        if not deployment_active(dep):
            raise DeploymentError("can't set health of allocations for a terminal deployment")
        if not healthy and not unhealthy:
            raise DeploymentError("must specify at least one healthy/unhealthy allocation ID")
        txn = self.state.txn("DeploymentAllocHealth")
        now = now_ns()
        failed_groups: set[str] = set()
        for ids, value in ((healthy, True), (unhealthy, False)):
            for aid in ids:
                a = self.state.allocs.get(aid)
                if a is None or a.get("DeploymentID") != dep["ID"]:
                    raise DeploymentError(f"Deployment {dep['ID']} doesn't contain allocation "
                                          f"{aid}")
                status = copy.deepcopy(a.get("DeploymentStatus") or {})
                previous = status.get("Healthy")
                status.update({"Healthy": value, "Timestamp": rfc3339_ns(now),
                               "ModifyIndex": txn.index})
                status.setdefault("Canary", False)
                a["DeploymentStatus"] = status
                txn.put_alloc(a)
                ds = dep["TaskGroups"].get(a["TaskGroup"])
                if ds is None or previous is value:
                    continue
                if value:
                    ds["HealthyAllocs"] += 1
                    if ds["ProgressDeadline"]:
                        ds["RequireProgressBy"] = rfc3339_ns(now + ds["ProgressDeadline"])
                else:
                    ds["UnhealthyAllocs"] += 1
                    failed_groups.add(a["TaskGroup"])
        txn.put_deployment(dep)
        if failed_groups:
            self.fail(dep, FAILED_UNHEALTHY, groups=failed_groups, txn=txn)
        else:
            self.server.create_eval(txn, dep["Namespace"], dep["JobID"], "deployment-watcher",
                                    deployment_id=dep["ID"])
        txn.commit()
        self.kick(dep["ID"])
        return txn
