"""The server side of localnomad: job writes, evaluations, plan application, client updates.

`Server` is what Nomad's leader does for one node: registers jobs (versions only on a
spec change, check-and-set on JobModifyIndex), creates evaluations and processes
them in order (scheduler.py's reconcile, applied as one `PlanResult` transaction),
applies batched client updates (`AllocationUpdated`: task states, client status,
deployment health and counters, evals for failed allocs), keeps Nomad-provider
service registrations and the one node. Deployment reactions are in deployments.py,
HTTP shapes in http_api.py. Everything runs on the event loop, so no locks.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .canonicalize import canonicalize_job, find_group, group_key, spec_key
from .client import Client, ClientUpdate
from .deployments import DeploymentWatcher, rfc3339_ns
from .diff import job_diff
from .errors import ApiError
from .events import EventBroker
from .ids import new_id
from .portalloc import PortAllocator
from .runtime import Runtime
from .scheduler import Plan, reconcile
from .state import JobKey, State, Txn, alloc_terminal, client_terminal, now_ns
from .templates import TemplateRenderer
from .validation import multierror, validate_job

log = logging.getLogger("localnomad.server")

NODE_NAME = "localnomad"
NODE_DATACENTER = "dc1"
TRACKED_VERSIONS = 6


@dataclass
class ServerSettings:
    data_dir: Path
    event_buffer_size: int = 100
    port_low: int = 20000
    port_high: int = 32000
    vault_addr: str | None = None
    vault_token: str | None = None
    node_id: str | None = None


def job_feasible(job: dict[str, Any]) -> bool:
    """Can the one node (datacenter dc1, pool default) run this job at all?"""
    datacenters = job.get("Datacenters") or ["*"]
    if not any(fnmatch.fnmatchcase(NODE_DATACENTER, pattern) for pattern in datacenters):
        return False
    return job.get("NodePool") in (None, "", "default", "all")


def placement_failures(job: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """FailedTGAllocs for groups whose placements cannot go anywhere."""
    if job_feasible(job):
        return {}
    wanted: dict[str, int] = {}
    for p in plan.place:
        wanted[p.group] = wanted.get(p.group, 0) + 1
    return {group: {
        "NodesEvaluated": 0, "NodesFiltered": 0, "NodesInPool": 0, "NodesAvailable": {},
        "ClassFiltered": None, "ConstraintFiltered": None, "NodesExhausted": 0,
        "ClassExhausted": None, "DimensionExhausted": None, "QuotaExhausted": None,
        "ResourcesExhausted": None, "Scores": None, "ScoreMetaData": None,
        "AllocationTime": 0, "CoalescedFailures": n - 1} for group, n in wanted.items()}


def register_response(txn_index: int, eval_id: str, eval_index: int, jmi: int,
                      warnings: str = "") -> dict[str, Any]:
    return {"EvalID": eval_id, "EvalCreateIndex": eval_index, "JobModifyIndex": jmi,
            "Warnings": warnings, "Index": txn_index, "LastContact": 0, "KnownLeader": True}


class Server:
    def __init__(self, settings: ServerSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.broker = EventBroker(settings.event_buffer_size)
        self.state = State(self.broker)
        self.runtime = runtime
        self.ports = PortAllocator(settings.port_low, settings.port_high)
        self.templates = TemplateRenderer(settings.vault_addr, settings.vault_token)
        self.client = Client(self, runtime, settings.data_dir / "allocs", self.templates)
        self.watcher = DeploymentWatcher(self)
        self.node_id = settings.node_id or new_id()
        self._eval_queue: deque[str] = deque()
        self._draining = False
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._registered_services: dict[str, list[str]] = {}  # alloc ID -> registration IDs
        self.started_at = time.time()

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, restored: bool = False) -> None:
        node = self.state.nodes.get(self.node_id) or self._node()
        txn = self.state.txn("NodeRegistration")
        node["Status"] = "ready"
        node["StatusUpdatedAt"] = int(time.time())
        txn.put_node(node)
        txn.commit()
        if restored:
            self._resume_after_restore()

    def _resume_after_restore(self) -> None:
        for alloc in self.state.allocs.values():
            shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
            if not client_terminal(alloc):
                for p in shared.get("Ports") or []:
                    self.ports.reserve(p["Value"], alloc["ID"])
        for alloc in list(self.state.allocs.values()):
            if alloc["DesiredStatus"] == "run" and not client_terminal(alloc):
                self.client.sync(alloc, adopt=True)
            elif alloc["DesiredStatus"] != "run" and not client_terminal(alloc):
                self._mark_stopped_after_restore(alloc)
        for ev in self.state.evals.values():
            if ev["Status"] == "pending":
                self._schedule_eval(ev)
        for dep in self.state.deployments.values():
            self.watcher.kick(dep["ID"])

    def _mark_stopped_after_restore(self, alloc: dict[str, Any]) -> None:
        # Its runner is gone with the old process; make sure no container is left behind.
        self.client.sync(dict(alloc, DesiredStatus="run"), adopt=True)
        self.client.sync(alloc)

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self.watcher.close()
        await self.client.close()

    def _node(self) -> dict[str, Any]:
        return {
            "ID": self.node_id, "SecretID": "", "Datacenter": "dc1", "Name": NODE_NAME,
            "HTTPAddr": "127.0.0.1:4646", "TLSEnabled": False, "NodePool": "default",
            "Attributes": {"kernel.name": "linux", "arch": "amd64", "os.name": "localnomad",
                           "driver.docker": "1", "nomad.version": "1.11.0",
                           "unique.hostname": NODE_NAME, "unique.network.ip-address":
                           "127.0.0.1"},
            "NodeResources": {"Cpu": {"CpuShares": 8000}, "Memory": {"MemoryMB": 16384},
                              "Disk": {"DiskMB": 100000}, "Networks": None,
                              "MinDynamicPort": self.settings.port_low,
                              "MaxDynamicPort": self.settings.port_high},
            "ReservedResources": None, "Links": None, "Meta": {"connect.log_level": "info"},
            "NodeClass": "", "ComputedClass": "", "Drain": False, "DrainStrategy": None,
            "SchedulingEligibility": "eligible", "Status": "ready",
            "StatusDescription": "", "StatusUpdatedAt": int(time.time()),
            "Events": [{"Message": "Node registered", "Subsystem": "Cluster",
                        "Details": None, "Timestamp": rfc3339_ns(now_ns()), "CreateIndex": 0}],
            "Drivers": {
                "docker": self._driver_info(self.runtime.name),
                "raw_exec": {"Attributes": None, "Detected": False, "Healthy": False,
                             "HealthDescription": "disabled", "UpdateTime": rfc3339_ns(
                                 now_ns())},
            },
            "HostVolumes": None, "HostNetworks": None, "CSIControllerPlugins": None,
            "CSINodePlugins": None, "LastDrain": None, "CreateIndex": 0, "ModifyIndex": 0,
        }

    @staticmethod
    def _driver_info(runtime: str) -> dict[str, Any]:
        return {"Attributes": {"driver.docker": "true", "driver.docker.runtime": runtime},
                "Detected": True, "Healthy": True, "HealthDescription": "Healthy",
                "UpdateTime": rfc3339_ns(now_ns())}

    # ---- jobs --------------------------------------------------------------------------
    def prepare_job(self, raw: dict[str, Any], ns_query: str | None,
                    body_ns: str | None) -> dict[str, Any]:
        ns = ns_query or body_ns or raw.get("Namespace") or "default"
        raw = dict(raw, Namespace=ns)
        job = canonicalize_job(raw)
        if ns not in self.state.namespaces:
            raise ApiError(500, f'job "{job["ID"]}" is in nonexistent namespace "{ns}"')
        errors = validate_job(job)
        if errors:
            raise ApiError(500, multierror(errors))
        return job

    def register(self, job: dict[str, Any], enforce: bool = False, jmi: int = 0,
                 eval_priority: int = 0, preserve_counts: bool = False,
                 submission: dict[str, Any] | None = None) -> dict[str, Any]:
        key = (job["Namespace"], job["ID"])
        existing = self.state.jobs.get(key)
        if enforce:
            if jmi == 0 and existing is not None:
                raise ApiError(500, "Enforcing job modify index 0: job already exists")
            if jmi != 0 and existing is None:
                raise ApiError(500, f"Enforcing job modify index {jmi}: job does not exist")
            if existing is not None and jmi != existing["JobModifyIndex"]:
                raise ApiError(500, f"Enforcing job modify index {jmi}: job exists with "
                                    f"conflicting job modify index: {existing['JobModifyIndex']}")
        if existing is not None:
            if existing["Type"] != job["Type"]:
                raise ApiError(500, f'cannot update job from type "{existing["Type"]}" to '
                                    f'"{job["Type"]}"')
            if bool(existing.get("Periodic")) != bool(job.get("Periodic")):
                raise ApiError(500, "cannot update periodic job to non-periodic"
                               if existing.get("Periodic") else
                               "cannot update non-periodic job to periodic")
            if preserve_counts:
                for group in job["TaskGroups"]:
                    old = find_group(existing, group["Name"])
                    if old is not None:
                        group["Count"] = old["Count"]
        no_eval = bool(job.get("Periodic") or job.get("ParameterizedJob"))
        if existing is not None and spec_key(existing) == spec_key(job):
            txn = self.state.txn("EvaluationUpdated")
            ev = None if no_eval else self.create_eval(txn, key[0], key[1], "job-register",
                                                       priority=eval_priority)
            txn.commit()
            return register_response(self.state.index, ev["ID"] if ev else "",
                                     ev["CreateIndex"] if ev else 0, existing["ModifyIndex"])
        txn = self.state.txn("JobRegistered")
        new_job = self._store_version(job, existing, txn)
        if submission:
            self.state.submissions[(key[0], key[1], new_job["Version"])] = dict(
                submission, JobID=key[1], Namespace=key[0], Version=new_job["Version"],
                JobModifyIndex=txn.index)
        txn.split()
        ev = None if no_eval else self.create_eval(txn, key[0], key[1], "job-register",
                                                   priority=eval_priority)
        txn.commit()
        return register_response(txn.index, ev["ID"] if ev else "",
                                 ev["CreateIndex"] if ev else 0, new_job["JobModifyIndex"])

    def _store_version(self, job: dict[str, Any], existing: dict[str, Any] | None,
                       txn: Txn) -> dict[str, Any]:
        key = (job["Namespace"], job["ID"])
        job["Version"] = existing["Version"] + 1 if existing is not None else 0
        job["CreateIndex"] = existing["CreateIndex"] if existing is not None else txn.index
        job["JobModifyIndex"] = txn.index
        job["SubmitTime"] = now_ns()
        job["Stable"] = False
        job["VersionTag"] = None
        job["Status"] = existing["Status"] if existing is not None else "pending"
        versions = self.state.versions.setdefault(key, [])
        versions.insert(0, job)
        self._prune_versions(versions)
        txn.put_job(job)
        return job

    @staticmethod
    def _prune_versions(versions: list[dict[str, Any]]) -> None:
        untagged = [v for v in versions if not v.get("VersionTag")]
        if len(untagged) <= TRACKED_VERSIONS:
            return
        keep = untagged[:TRACKED_VERSIONS]
        if not any(v["Stable"] for v in keep):
            stable = next((v for v in untagged[TRACKED_VERSIONS:] if v["Stable"]), None)
            if stable is not None:
                keep[-1] = stable  # auto-revert must always have a target
        drop = {id(v) for v in untagged if all(v is not k for k in keep)}
        versions[:] = [v for v in versions if id(v) not in drop]

    def new_version_from(self, spec: dict[str, Any], txn: Txn) -> dict[str, Any]:
        """Register an old version's spec as a new version (revert, auto-revert)."""
        key = (spec["Namespace"], spec["ID"])
        current = self.state.jobs.get(key)
        job = copy.deepcopy(spec)
        return self._store_version(job, current, txn)

    def deregister(self, ns: str, job_id: str, purge: bool) -> dict[str, Any]:
        key = (ns, job_id)
        existing = self.state.jobs.get(key)
        if existing is None:
            raise ApiError(404, "job not found")
        txn = self.state.txn("JobDeregistered")
        jmi = existing["JobModifyIndex"]
        if purge:
            txn.put_job(existing, deleted=True)
            self.state.evals_by_job.setdefault(key, [])
        elif not existing.get("Stop"):
            stopped = copy.deepcopy(existing)
            stopped["Stop"] = True
            jmi = self._store_version(stopped, existing, txn)["JobModifyIndex"]
        txn.split()
        ev = self.create_eval(txn, ns, job_id, "job-deregister")
        txn.commit()
        return {"EvalID": ev["ID"], "EvalCreateIndex": ev["CreateIndex"],
                "JobModifyIndex": jmi if not purge else txn.index, "VolumeEvalID": "",
                "VolumeEvalIndex": 0, "Index": txn.index, "LastContact": 0,
                "KnownLeader": True}

    def revert(self, ns: str, job_id: str, version: int,
               enforce_prior: int | None) -> dict[str, Any]:
        key = (ns, job_id)
        current = self.state.jobs.get(key)
        if current is None:
            raise ApiError(500, f'job "{job_id}" not found')
        if enforce_prior is not None and current["Version"] != enforce_prior:
            raise ApiError(500, f"Current job has version {current['Version']}; enforcing "
                                f"version {enforce_prior}")
        if version == current["Version"]:
            raise ApiError(500, "can't revert to current version")
        target = next((v for v in self.state.versions.get(key, [])
                       if v["Version"] == version), None)
        if target is None:
            raise ApiError(500, f'job "{job_id}" in namespace "{ns}" at version {version} '
                                f'not found')
        job = copy.deepcopy(target)
        return self.register(job, enforce=enforce_prior is not None,
                             jmi=current["JobModifyIndex"])

    def set_stable(self, ns: str, job_id: str, version: int, stable: bool) -> dict[str, Any]:
        key = (ns, job_id)
        target = next((v for v in self.state.versions.get(key, [])
                       if v["Version"] == version), None)
        if target is None:
            raise ApiError(500, f'job "{job_id}" in namespace "{ns}" at version {version} '
                                f'not found')
        target["Stable"] = stable
        self.state.dirty.add(("job", f"{ns}\x00{job_id}"))
        index = self.set_stable_index(("jobs", "job_version"))
        target["ModifyIndex"] = index
        return {"JobModifyIndex": index, "Index": index, "LastContact": 0,
                "KnownLeader": True}

    def set_stable_index(self, tables: tuple[str, ...] = ()) -> int:
        """A raft write with no event-stream mapping: the index moves, nothing is published."""
        st = self.state
        st.index += 1
        for table in tables:
            st.table_index[table] = st.index
        st._notify()
        self._changed()
        return st.index

    def evaluate(self, ns: str, job_id: str, force_reschedule: bool) -> dict[str, Any]:
        key = (ns, job_id)
        job = self.state.jobs.get(key)
        if job is None:
            raise ApiError(404, "job not found")
        txn = self.state.txn("JobRegistered" if force_reschedule else "EvaluationUpdated")
        if force_reschedule:
            for a in self.state.job_allocs(key):
                if a["ClientStatus"] == "failed" and not a.get("NextAllocation"):
                    a["DesiredTransition"] = dict(a.get("DesiredTransition") or {},
                                                  ForceReschedule=True)
                    txn.put_alloc(a)
        ev = self.create_eval(txn, ns, job_id, "job-register")
        txn.commit()
        return {"EvalID": ev["ID"], "EvalCreateIndex": ev["CreateIndex"],
                "JobModifyIndex": job["JobModifyIndex"], "Index": txn.index,
                "LastContact": 0, "KnownLeader": True}

    def scale(self, ns: str, job_id: str, group: str, count: int | None,
              enforce: bool, jmi: int) -> dict[str, Any]:
        key = (ns, job_id)
        current = self.state.jobs.get(key)
        if current is None:
            raise ApiError(404, "job not found")
        if find_group(current, group) is None:
            raise ApiError(400, f'task group "{group}" specified for scaling does not exist '
                                f'in job')
        if count is None:
            ev_txn = self.state.txn("EvaluationUpdated")
            ev = self.create_eval(ev_txn, ns, job_id, "job-scaling")
            ev_txn.commit()
            return register_response(ev_txn.index, ev["ID"], ev["CreateIndex"],
                                     current["JobModifyIndex"])
        if count < 0:
            raise ApiError(400, "Scaling action count can't be negative")
        job = copy.deepcopy(current)
        g = find_group(job, group)
        assert g is not None
        g["Count"] = count
        return self.register(job, enforce=enforce, jmi=jmi)

    def plan(self, job: dict[str, Any], want_diff: bool) -> dict[str, Any]:
        key = (job["Namespace"], job["ID"])
        existing = self.state.jobs.get(key)
        candidate = copy.deepcopy(job)
        if existing is not None and spec_key(existing) == spec_key(job):
            candidate = existing
        else:
            candidate["Version"] = existing["Version"] + 1 if existing else 0
            candidate["CreateIndex"] = existing["CreateIndex"] if existing else \
                self.state.index + 1
            candidate["JobModifyIndex"] = self.state.index + 1
        allocs = self.state.job_allocs(key)
        plan = reconcile(candidate, allocs, self.state.latest_deployment(key), now_ns())
        destructive = {g for g, a in plan.annotations.items()
                       if a.get("DestructiveUpdate") or a.get("Canary")}
        if existing is not None:
            for g in candidate["TaskGroups"]:
                if group_key(existing, g["Name"]) != group_key(candidate, g["Name"]):
                    destructive.add(g["Name"])
        diff = job_diff(existing, candidate, destructive, plan.annotations) if want_diff \
            else None
        failed = placement_failures(candidate, plan)
        return {
            "JobModifyIndex": existing["JobModifyIndex"] if existing else 0,
            "CreatedEvals": None, "Diff": diff,
            "Annotations": {"DesiredTGUpdates": plan.annotations, "PreemptedAllocs": None},
            "FailedTGAllocs": failed or None, "NextPeriodicLaunch": "0001-01-01T00:00:00Z",
            "Warnings": "", "Index": self.state.index,
        }

    # ---- evaluations -------------------------------------------------------------------
    def create_eval(self, txn: Txn, ns: str, job_id: str, triggered_by: str,
                    deployment_id: str = "", priority: int = 0,
                    wait_until: int = 0) -> dict[str, Any]:
        job = self.state.jobs.get((ns, job_id))
        ev = {
            "ID": new_id(), "Namespace": ns, "Priority": priority or (
                job["Priority"] if job else 50),
            "Type": job["Type"] if job else "service", "TriggeredBy": triggered_by,
            "JobID": job_id, "JobModifyIndex": job["JobModifyIndex"] if job else 0,
            "NodeID": "", "NodeModifyIndex": 0, "DeploymentID": deployment_id,
            "Status": "pending", "StatusDescription": "", "Wait": 0,
            "WaitUntil": rfc3339_ns(wait_until) if wait_until else "0001-01-01T00:00:00Z",
            "NextEval": "", "PreviousEval": "", "BlockedEval": "", "RelatedEvals": None,
            "FailedTGAllocs": None, "ClassEligibility": None, "EscapedComputedClass": False,
            "QuotaLimitReached": "", "AnnotatePlan": False, "QueuedAllocations": None,
            "LeaderACL": "", "SnapshotIndex": 0, "CreateIndex": 0, "ModifyIndex": 0,
            "CreateTime": now_ns(), "ModifyTime": now_ns(),
        }
        txn.put_eval(ev)
        loop = asyncio.get_running_loop()
        # Queued once the transaction that wrote it is visible.
        loop.call_soon(self._schedule_eval, ev)
        return ev

    def _schedule_eval(self, ev: dict[str, Any]) -> None:
        if ev["Status"] != "pending":
            return
        wait_until = ev.get("WaitUntil") or ""
        if not wait_until.startswith("0001"):
            from .deployments import parse_rfc3339

            at = parse_rfc3339(wait_until) or 0.0
            delay = at - time.time()
            if delay > 0:
                handle = asyncio.get_running_loop().call_later(delay, self._enqueue, ev["ID"])
                self._timers[ev["ID"]] = handle
                return
        self._enqueue(ev["ID"])

    def _enqueue(self, eval_id: str) -> None:
        self._timers.pop(eval_id, None)
        self._eval_queue.append(eval_id)
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        try:
            while self._eval_queue:
                eval_id = self._eval_queue.popleft()
                try:
                    self.process_eval(eval_id)
                except Exception:
                    log.exception("eval processing failed eval=%s", eval_id)
        finally:
            self._draining = False

    def process_eval(self, eval_id: str) -> None:
        ev = self.state.evals.get(eval_id)
        if ev is None or ev["Status"] != "pending":
            return
        key = (ev["Namespace"], ev["JobID"])
        job = self.state.jobs.get(key)
        plan = reconcile(job, self.state.job_allocs(key), self.state.latest_deployment(key),
                         now_ns())
        failed = placement_failures(job, plan) if job is not None else {}
        if failed:
            plan.place = [p for p in plan.place if p.group not in failed]
        if any(a for a, _ in plan.reschedule_later if not a.get("FollowupEvalID")) or \
                not plan.is_noop():
            self.apply_plan(plan, ev)
        txn = self.state.txn("EvaluationUpdated")
        # A newer evaluation supersedes the job's blocked one, as in Nomad's blocked-evals.
        for other in self.state.job_evals(key):
            if other["Status"] == "blocked" and other["ID"] != ev["ID"]:
                other["Status"] = "canceled"
                other["StatusDescription"] = "evaluation superseded by a newer one"
                txn.put_eval(other)
        ev["Status"] = "complete"
        if job is not None:
            ev["QueuedAllocations"] = {g["Name"]: failed.get(g["Name"], {}).get(
                "CoalescedFailures", -1) + 1 if g["Name"] in failed else 0
                for g in job["TaskGroups"]}
        if failed:
            ev["FailedTGAllocs"] = failed
            blocked = self.create_eval(txn, key[0], key[1], "queued-allocs")
            blocked["Status"] = "blocked"
            blocked["StatusDescription"] = "created to place remaining allocations"
            blocked["PreviousEval"] = ev["ID"]
            ev["BlockedEval"] = blocked["ID"]
        if plan.deployment is not None and not ev["DeploymentID"]:
            ev["DeploymentID"] = plan.deployment["ID"]
        txn.put_eval(ev)
        txn.commit()

    def apply_plan(self, plan: Plan, ev: dict[str, Any]) -> None:
        txn = self.state.txn("PlanResult")
        now = now_ns()
        job = plan.job
        touched: list[dict[str, Any]] = []
        if plan.cancel_deployment is not None:
            cancelled, why = plan.cancel_deployment
            cancelled["Status"] = "cancelled"
            cancelled["StatusDescription"] = why
            txn.put_deployment(cancelled)
        dep = plan.deployment
        if plan.create_deployment is not None:
            txn.put_deployment(plan.create_deployment)
        for alloc, desc in plan.stop:
            alloc["DesiredStatus"] = "stop"
            alloc["DesiredDescription"] = desc
            alloc["AllocModifyIndex"] = txn.index
            txn.put_alloc(alloc)
            touched.append(alloc)
        for alloc in plan.inplace:
            assert job is not None
            alloc["Job"] = job
            alloc["AllocModifyIndex"] = txn.index
            if dep is not None and alloc["TaskGroup"] in dep["TaskGroups"]:
                alloc["DeploymentID"] = dep["ID"]
                alloc["DeploymentStatus"] = None
                self._placed_in(dep, alloc["TaskGroup"], alloc["ID"], False, now)
            txn.put_alloc(alloc)
            touched.append(alloc)
        for p in plan.place:
            assert job is not None
            alloc = self._new_alloc(job, p.group, p.name, ev["ID"], now)
            if dep is not None and p.group in dep["TaskGroups"]:
                alloc["DeploymentID"] = dep["ID"]
                alloc["DeploymentStatus"] = {"Healthy": None, "Timestamp": "0001-01-01T00:00:00Z",
                                             "Canary": p.canary, "ModifyIndex": 0}
                self._placed_in(dep, p.group, alloc["ID"], p.canary, now)
            if p.previous is not None:
                prev = p.previous
                alloc["PreviousAllocation"] = prev["ID"]
                prev["NextAllocation"] = alloc["ID"]
                if p.reschedule:
                    events = list((prev.get("RescheduleTracker") or {}).get("Events") or [])
                    group = find_group(job, p.group) or {}
                    from .scheduler import next_delay

                    events.append({"PrevAllocID": prev["ID"], "PrevNodeID": self.node_id,
                                   "RescheduleTime": now,
                                   "Delay": next_delay(prev, group.get("ReschedulePolicy") or {})})
                    alloc["RescheduleTracker"] = {"Events": events, "LastReschedule": "OK"}
                    # Nomad bounds the tracker; keep the last few events.
                    alloc["RescheduleTracker"]["Events"] = events[-10:]
                txn.put_alloc(prev)
            txn.put_alloc(alloc)
            touched.append(alloc)
        if dep is not None and (plan.create_deployment is not None or plan.place
                                or plan.inplace):
            txn.put_deployment(dep)
        for alloc, when in plan.reschedule_later:
            if alloc.get("FollowupEvalID"):
                continue
            follow = self.create_eval(txn, alloc["Namespace"], alloc["JobID"], "alloc-failure",
                                      wait_until=when)
            alloc["FollowupEvalID"] = follow["ID"]
            txn.put_alloc(alloc)
        if plan.mark_successful and plan.deployment is not None:
            sdep = plan.deployment
            sdep["Status"] = "successful"
            from .scheduler import DESC_SUCCESS

            sdep["StatusDescription"] = DESC_SUCCESS
            txn.put_deployment(sdep)
            key = (sdep["Namespace"], sdep["JobID"])
            version = next((v for v in self.state.versions.get(key, [])
                            if v["Version"] == sdep["JobVersion"]), None)
            if version is not None:
                version["Stable"] = True
                txn.put_job(version) if self.state.jobs.get(key) is version else None
        txn.commit()
        for alloc in touched:
            self.client.sync(alloc)
        for d in {id(x): x for x in (plan.deployment, plan.create_deployment) if x}.values():
            self.watcher.kick(d["ID"])

    def _placed_in(self, dep: dict[str, Any], group: str, alloc_id: str, canary: bool,
                   now: int) -> None:
        ds = dep["TaskGroups"][group]
        ds["PlacedAllocs"] += 1
        if canary:
            ds["PlacedCanaries"] = [*(ds["PlacedCanaries"] or []), alloc_id]
        if ds["ProgressDeadline"] and ds["RequireProgressBy"].startswith("0001"):
            ds["RequireProgressBy"] = rfc3339_ns(now + ds["ProgressDeadline"])

    def _new_alloc(self, job: dict[str, Any], group_name: str, name: str, eval_id: str,
                   now: int) -> dict[str, Any]:
        alloc_id = new_id()
        group = find_group(job, group_name) or {}
        ports: list[dict[str, Any]] = []
        networks = []
        for net in group.get("Networks") or []:
            dyn = []
            for port in net.get("DynamicPorts") or []:
                value = self.ports.allocate(alloc_id)
                dyn.append({"Label": port["Label"], "Value": value, "To": port.get("To") or 0,
                            "HostNetwork": "default"})
                ports.append({"Label": port["Label"], "Value": value,
                              "To": port.get("To") or 0, "HostIP": "127.0.0.1"})
            reserved = []
            for port in net.get("ReservedPorts") or []:
                self.ports.reserve(port["Value"], alloc_id)
                reserved.append(dict(port))
                ports.append({"Label": port["Label"], "Value": port["Value"],
                              "To": port.get("To") or 0, "HostIP": "127.0.0.1"})
            networks.append({"Mode": net.get("Mode") or "host", "Device": "", "CIDR": "",
                             "IP": "127.0.0.1", "DNS": net.get("DNS"),
                             "ReservedPorts": reserved or None, "DynamicPorts": dyn or None,
                             "MBits": 0, "Hostname": ""})
        tasks = {t["Name"]: {"Cpu": {"CpuShares": t["Resources"]["CPU"], "ReservedCores": None},
                             "Memory": {"MemoryMB": t["Resources"]["MemoryMB"],
                                        "MemoryMaxMB": t["Resources"]["MemoryMaxMB"]},
                             "Networks": None}
                 for t in group.get("Tasks") or []}
        return {
            "ID": alloc_id, "Namespace": job["Namespace"], "EvalID": eval_id, "Name": name,
            "NodeID": self.node_id, "NodeName": NODE_NAME, "JobID": job["ID"], "Job": job,
            "TaskGroup": group_name,
            "AllocatedResources": {"Tasks": tasks, "TaskLifecycles": None, "Shared": {
                "DiskMB": (group.get("EphemeralDisk") or {}).get("SizeMB", 300),
                "Networks": networks or None, "Ports": ports or None}},
            "Metrics": {"NodesEvaluated": 1, "NodesFiltered": 0, "NodesInPool": 1,
                        "NodesAvailable": {"dc1": 1}, "ClassFiltered": None,
                        "ConstraintFiltered": None, "NodesExhausted": 0, "ClassExhausted": None,
                        "DimensionExhausted": None, "QuotaExhausted": None,
                        "ResourcesExhausted": None, "Scores": None, "ScoreMetaData": None,
                        "AllocationTime": 0, "CoalescedFailures": 0},
            "DesiredStatus": "run", "DesiredDescription": "",
            "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None,
                                  "NoShutdownDelay": None},
            "ClientStatus": "pending", "ClientDescription": "", "TaskStates": None,
            "DeploymentID": "", "DeploymentStatus": None, "FollowupEvalID": "",
            "PreviousAllocation": "", "NextAllocation": "", "RescheduleTracker": None,
            "NetworkStatus": None, "PreemptedAllocations": None, "PreemptedByAllocation": "",
            "CreateIndex": 0, "ModifyIndex": 0, "AllocModifyIndex": 0, "CreateTime": now,
            "ModifyTime": now,
        }

    # ---- allocations -------------------------------------------------------------------
    def stop_alloc(self, alloc_id: str) -> dict[str, Any]:
        alloc = self.state.allocs.get(alloc_id)
        if alloc is None:
            raise ApiError(404, "alloc not found")
        txn = self.state.txn("AllocationUpdateDesiredStatus")
        alloc["DesiredTransition"] = dict(alloc.get("DesiredTransition") or {}, Migrate=True)
        alloc["DesiredStatus"] = "stop"
        alloc["DesiredDescription"] = "alloc is being migrated"
        txn.put_alloc(alloc)
        ev = self.create_eval(txn, alloc["Namespace"], alloc["JobID"], "alloc-stop")
        txn.commit()
        self.client.sync(alloc)
        return {"EvalID": ev["ID"], "Index": txn.index}

    # ---- client updates ----------------------------------------------------------------
    def apply_client_updates(self, batch: dict[str, ClientUpdate]) -> None:
        txn = self.state.txn("AllocationUpdated")
        now = now_ns()
        deps: dict[str, dict[str, Any]] = {}
        newly_failed: set[JobKey] = set()
        health_changed: set[str] = set()
        for alloc_id, upd in batch.items():
            alloc = self.state.allocs.get(alloc_id)
            if alloc is None:
                continue
            if upd.task_states is not None:
                alloc["TaskStates"] = upd.task_states
            if upd.client_status is not None and upd.client_status != alloc["ClientStatus"]:
                was_terminal = client_terminal(alloc)
                alloc["ClientStatus"] = upd.client_status
                if upd.client_status == "failed" and not was_terminal \
                        and alloc["DesiredStatus"] == "run":
                    newly_failed.add((alloc["Namespace"], alloc["JobID"]))
            if upd.client_description is not None:
                alloc["ClientDescription"] = upd.client_description
            if upd.health is not None and alloc.get("DeploymentID") == \
                    upd.health_for_deployment:
                status = dict(alloc.get("DeploymentStatus") or {"Canary": False})
                if status.get("Healthy") is None:
                    status.update({"Healthy": upd.health, "Timestamp": rfc3339_ns(now),
                                   "ModifyIndex": txn.index})
                    alloc["DeploymentStatus"] = status
                    dep = self.state.deployments.get(alloc["DeploymentID"])
                    if dep is not None and dep["Status"] in ("running", "paused"):
                        ds = dep["TaskGroups"].get(alloc["TaskGroup"])
                        if ds is not None:
                            if upd.health:
                                ds["HealthyAllocs"] += 1
                                if ds["ProgressDeadline"]:
                                    ds["RequireProgressBy"] = rfc3339_ns(
                                        now + ds["ProgressDeadline"])
                            else:
                                ds["UnhealthyAllocs"] += 1
                            deps[dep["ID"]] = dep
                            health_changed.add(dep["ID"])
            txn.put_alloc(alloc)
            if client_terminal(alloc):
                self.ports.release_alloc(alloc_id)
        for dep in deps.values():
            txn.put_deployment(dep)
            if dep["Status"] == "running":
                self.create_eval(txn, dep["Namespace"], dep["JobID"], "deployment-watcher",
                                 deployment_id=dep["ID"])
        for ns, job_id in newly_failed:
            if self.state.jobs.get((ns, job_id)) is not None:
                self.create_eval(txn, ns, job_id, "alloc-failure")
        txn.commit()
        for dep_id in health_changed:
            self.watcher.kick(dep_id)
        self._sync_services(batch)

    def _sync_services(self, batch: dict[str, ClientUpdate]) -> None:
        adds: list[dict[str, Any]] = []
        removes: list[dict[str, Any]] = []
        for alloc_id in batch:
            alloc = self.state.allocs.get(alloc_id)
            if alloc is None:
                continue
            registered = alloc_id in self._registered_services
            live = alloc["ClientStatus"] == "running" and not alloc_terminal(alloc)
            if live and not registered:
                adds.extend(self._service_regs(alloc))
                self._registered_services[alloc_id] = [r["ID"] for r in adds
                                                       if r["AllocID"] == alloc_id]
            elif not live and registered:
                for reg_id in self._registered_services.pop(alloc_id):
                    reg = self.state.services.get(reg_id)
                    if reg is not None:
                        removes.append(reg)
        if adds:
            txn = self.state.txn("ServiceRegistration")
            for reg in adds:
                txn.put_service(reg)
            txn.commit()
        if removes:
            txn = self.state.txn("ServiceDeregistration")
            for reg in removes:
                txn.put_service(reg, deleted=True)
            txn.commit()

    def _service_regs(self, alloc: dict[str, Any]) -> list[dict[str, Any]]:
        group = find_group(alloc["Job"], alloc["TaskGroup"]) or {}
        shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
        ports = {p["Label"]: p["Value"] for p in shared.get("Ports") or []}
        canary = bool((alloc.get("DeploymentStatus") or {}).get("Canary"))
        out = []
        services = [("group", s) for s in group.get("Services") or []]
        for task in group.get("Tasks") or []:
            services.extend((task["Name"], s) for s in task.get("Services") or [])
        for owner, svc in services:
            if svc.get("Provider") != "nomad":
                continue
            label = svc.get("PortLabel") or ""
            port = ports.get(label, int(label) if label.isdigit() else 0)
            tags = svc.get("CanaryTags") if canary and svc.get("CanaryTags") else svc.get("Tags")
            out.append({
                "ID": f"_nomad-task-{alloc['ID']}-{owner}-{svc['Name']}-{label}",
                "ServiceName": svc["Name"], "Namespace": alloc["Namespace"],
                "NodeID": self.node_id, "Datacenter": "dc1", "JobID": alloc["JobID"],
                "AllocID": alloc["ID"], "Tags": tags or [], "Address": "127.0.0.1",
                "Port": port, "CreateIndex": 0, "ModifyIndex": 0,
            })
        return out

    # ---- persistence hook --------------------------------------------------------------
    def _changed(self) -> None:
        for hook in self.state.on_commit:
            hook(None)
