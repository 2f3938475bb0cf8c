"""The state store: tables of Nomad objects, raft-like indexes, transactions, blocking.

Objects are kept as dicts in Nomad's JSON shape, so reads encode them directly. Every
write is a `Txn` with one raft index and the raft operation's event Type; committing
stamps ModifyIndex, bumps the per-table indexes that blocking queries watch, recomputes
job statuses, and publishes the envelopes to the event broker. It holds no scheduling
or deployment logic (scheduler.py, deployments.py) and does no I/O (persistence.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .events import Event, EventBroker

TABLES = ("jobs", "job_version", "job_summary", "allocs", "deployment", "evals",
          "service_registrations", "nodes")

JobKey = tuple[str, str]


def now_ns() -> int:
    return time.time_ns()


def alloc_terminal(alloc: dict[str, Any]) -> bool:
    """Nomad's Allocation.TerminalStatus: desired stop/evict or a terminal client status."""
    return (alloc["DesiredStatus"] in ("stop", "evict")
            or alloc["ClientStatus"] in ("complete", "failed", "lost"))


def client_terminal(alloc: dict[str, Any]) -> bool:
    return alloc["ClientStatus"] in ("complete", "failed", "lost")


def deployment_active(dep: dict[str, Any]) -> bool:
    return dep["Status"] in ("running", "paused", "pending", "blocked", "unblocking",
                             "initializing")


class State:
    def __init__(self, broker: EventBroker) -> None:
        self.broker = broker
        self.index = 1
        self.table_index: dict[str, int] = dict.fromkeys(TABLES, 1)
        self.jobs: dict[JobKey, dict[str, Any]] = {}
        self.versions: dict[JobKey, list[dict[str, Any]]] = {}  # newest first
        self.submissions: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.allocs: dict[str, dict[str, Any]] = {}
        self.allocs_by_job: dict[JobKey, set[str]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.deployments_by_job: dict[JobKey, list[str]] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.evals_by_job: dict[JobKey, list[str]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.namespaces: set[str] = {"default"}
        self._changed = asyncio.Event()
        self.on_commit: list[Callable[[Txn | None], None]] = []
        # (kind, key) of every object written since persistence last looked; jobs are
        # keyed "namespace\x00id" and stand for all their versions.
        self.dirty: set[tuple[str, str]] = set()

    # ---- reads -------------------------------------------------------------------------
    def job_allocs(self, key: JobKey) -> list[dict[str, Any]]:
        return [self.allocs[a] for a in self.allocs_by_job.get(key, ()) if a in self.allocs]

    def job_deployments(self, key: JobKey) -> list[dict[str, Any]]:
        return [self.deployments[d] for d in self.deployments_by_job.get(key, ())
                if d in self.deployments]

    def latest_deployment(self, key: JobKey) -> dict[str, Any] | None:
        deps = self.job_deployments(key)
        return max(deps, key=lambda d: d["CreateIndex"]) if deps else None

    def job_evals(self, key: JobKey) -> list[dict[str, Any]]:
        return [self.evals[e] for e in self.evals_by_job.get(key, ()) if e in self.evals]

    def max_index(self, *tables: str) -> int:
        return max(self.table_index[t] for t in tables)

    # ---- blocking ------------------------------------------------------------------
    async def block(self, min_index: int, wait_s: float, index_fn: Callable[[], int]) -> int:
        """Wait until index_fn() > min_index or the wait runs out; return the index."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            idx = max(1, index_fn())
            if min_index <= 0 or idx > min_index:
                return idx
            remaining = deadline - loop.time()
            if remaining <= 0:
                return idx
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return max(1, index_fn())

    # ---- writes --------------------------------------------------------------------
    def txn(self, op_type: str) -> Txn:
        return Txn(self, op_type)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


_TOPIC = {"job": "Job", "alloc": "Allocation", "deployment": "Deployment",
          "eval": "Evaluation", "service": "Service", "node": "Node"}
_TABLE = {"job": ("jobs", "job_version", "job_summary"), "alloc": ("allocs", "job_summary"),
          "deployment": ("deployment",), "eval": ("evals",),
          "service": ("service_registrations",), "node": ("nodes",)}


class Txn:
    """One raft operation. Objects put here get its index; commit publishes events."""

    def __init__(self, state: State, op_type: str) -> None:
        self.state = state
        self.type = op_type
        self.index = state.index + 1
        self.parts: list[dict[tuple[str, str], tuple[str, dict[str, Any], bool]]] = [{}]
        self.touched_tables: set[str] = set()
        self.touched_jobs: set[JobKey] = set()
        self.committed = False
        self.result: dict[str, Any] = {}

    def split(self) -> None:
        """Start a second envelope with the same Index (job, then its eval)."""
        if self.parts[-1]:
            self.parts.append({})

    def _put(self, kind: str, obj: dict[str, Any], ident: str, deleted: bool = False) -> None:
        self.state.dirty.add((kind, f"{obj['Namespace']}\x00{obj['ID']}" if kind == "job"
                              else ident))
        obj["ModifyIndex"] = self.index
        if not obj.get("CreateIndex"):
            obj["CreateIndex"] = self.index
        self.parts[-1][(kind, ident)] = (kind, obj, deleted)
        self.touched_tables.update(_TABLE[kind])

    def put_job(self, job: dict[str, Any], deleted: bool = False) -> None:
        self._put("job", job, f"{job['Namespace']}/{job['ID']}", deleted)
        key = (job["Namespace"], job["ID"])
        st = self.state
        if deleted:
            st.jobs.pop(key, None)
            st.versions.pop(key, None)
        else:
            st.jobs[key] = job
        self.touched_jobs.add(key)

    def touch_job(self, job: dict[str, Any]) -> None:
        """Record a job change (status/stability) that is not a new version."""
        self.put_job(job)

    def put_alloc(self, alloc: dict[str, Any]) -> None:
        alloc["ModifyTime"] = now_ns()
        self._put("alloc", alloc, alloc["ID"])
        st = self.state
        st.allocs[alloc["ID"]] = alloc
        key = (alloc["Namespace"], alloc["JobID"])
        st.allocs_by_job.setdefault(key, set()).add(alloc["ID"])
        self.touched_jobs.add(key)

    def put_deployment(self, dep: dict[str, Any]) -> None:
        dep["ModifyTime"] = now_ns()
        self._put("deployment", dep, dep["ID"])
        st = self.state
        if dep["ID"] not in st.deployments:
            st.deployments_by_job.setdefault((dep["Namespace"], dep["JobID"]), []).append(
                dep["ID"])
        st.deployments[dep["ID"]] = dep

    def put_eval(self, ev: dict[str, Any]) -> None:
        ev["ModifyTime"] = now_ns()
        self._put("eval", ev, ev["ID"])
        st = self.state
        key = (ev["Namespace"], ev["JobID"])
        if ev["ID"] not in st.evals:
            st.evals_by_job.setdefault(key, []).append(ev["ID"])
        st.evals[ev["ID"]] = ev
        self.touched_jobs.add(key)

    def put_service(self, reg: dict[str, Any], deleted: bool = False) -> None:
        self._put("service", reg, reg["ID"], deleted)
        if deleted:
            self.state.services.pop(reg["ID"], None)
        else:
            self.state.services[reg["ID"]] = reg

    def put_node(self, node: dict[str, Any]) -> None:
        self._put("node", node, node["ID"])
        self.state.nodes[node["ID"]] = node

    def commit(self) -> int:
        assert not self.committed
        self.committed = True
        st = self.state
        self._refresh_job_statuses()
        if not any(self.parts):
            return st.index
        st.index = self.index
        for table in self.touched_tables:
            st.table_index[table] = self.index
        for part in self.parts:
            events = [self._event(kind, obj, deleted) for kind, obj, deleted in part.values()]
            st.broker.publish(self.index, events)
        st._notify()
        for hook in st.on_commit:
            hook(self)
        return self.index

    def _event(self, kind: str, obj: dict[str, Any], deleted: bool) -> Event:
        topic = _TOPIC[kind]
        payload: dict[str, Any]
        if kind == "job":
            payload = {"Job": obj}
            if deleted:
                payload["Deleted"] = True
            return Event(topic, self.type, obj["ID"], obj["Namespace"], None, payload)
        if kind == "alloc":
            stripped = dict(obj)
            stripped["Job"] = None
            return Event(topic, self.type, obj["ID"], obj["Namespace"],
                         [obj["JobID"], obj.get("DeploymentID") or ""],
                         {"Allocation": stripped})
        if kind == "deployment":
            return Event(topic, self.type, obj["ID"], obj["Namespace"], [obj["JobID"]],
                         {"Deployment": obj})
        if kind == "eval":
            return Event(topic, self.type, obj["ID"], obj["Namespace"],
                         [obj["JobID"], obj.get("DeploymentID") or ""], {"Evaluation": obj})
        if kind == "service":
            return Event(topic, self.type, obj["ID"], obj["Namespace"],
                         [obj["JobID"], obj["ServiceName"]], {"Service": obj})
        return Event(topic, self.type, obj["ID"], "", None, {"Node": obj})

    def _refresh_job_statuses(self) -> None:
        st = self.state
        for key in self.touched_jobs:
            job = st.jobs.get(key)
            if job is None:
                continue
            status = job_status(st, key, job)
            if status != job["Status"]:
                job["Status"] = status
                self.put_job(job)


def job_status(st: State, key: JobKey, job: dict[str, Any]) -> str:
    """Nomad's rule: running if any alloc is non-terminal, pending while an eval is
    outstanding, dead once stopped or everything finished."""
    allocs = st.job_allocs(key)
    if any(not alloc_terminal(a) for a in allocs):
        return "running"
    evals = st.job_evals(key)
    if any(e["Status"] in ("pending", "blocked") for e in evals[-5:]):
        return "pending"
    if job.get("Stop") or allocs or evals:
        return "dead"
    return "pending"
