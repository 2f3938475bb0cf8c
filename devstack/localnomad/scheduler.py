"""The reconciler: what an evaluation would change for one job, as a pure function.

Given the job (or its absence), its allocations and its latest deployment, `reconcile`
returns a `Plan`: placements (new, canary, destructive replacement, reschedule),
stops with Nomad's DesiredDescription texts, in-place updates, the deployment to
create, cancel or mark successful, delayed reschedules, and the per-group
`DesiredTGUpdates` annotations the plan endpoint reports. It never mutates state:
the server applies the plan in one `PlanResult` transaction, and the plan endpoint
runs it as a dry run. Single node: placement always succeeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .canonicalize import group_key
from .state import alloc_terminal, client_terminal, deployment_active

ALLOC_NOT_NEEDED = "alloc not needed due to job update"
ALLOC_UPDATING = "alloc is being updated due to job update"
ALLOC_RESCHEDULED = "alloc was rescheduled because it failed"
ALLOC_NOT_NEEDED_CANARY = "alloc not needed due to job update"

DESC_RUNNING = "Deployment is running"
DESC_NEEDS_PROMOTION = "Deployment is running but requires manual promotion"
DESC_AUTO_PROMOTION = "Deployment is running pending automatic promotion"
DESC_SUCCESS = "Deployment completed successfully"
DESC_STOPPED = "Cancelled because job is stopped"
DESC_NEWER = "Cancelled due to newer version of job"


@dataclass
class Placement:
    group: str
    name: str
    canary: bool = False
    previous: dict[str, Any] | None = None
    reschedule: bool = False


@dataclass
class Plan:
    job: dict[str, Any] | None
    place: list[Placement] = field(default_factory=list)
    stop: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    inplace: list[dict[str, Any]] = field(default_factory=list)
    create_deployment: dict[str, Any] | None = None
    cancel_deployment: tuple[dict[str, Any], str] | None = None
    deployment: dict[str, Any] | None = None  # the deployment placements belong to
    mark_successful: bool = False
    reschedule_later: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    annotations: dict[str, dict[str, int]] = field(default_factory=dict)

    def is_noop(self) -> bool:
        return not (self.place or self.stop or self.inplace or self.create_deployment
                    or self.cancel_deployment or self.mark_successful)


def _ann(plan: Plan, group: str) -> dict[str, int]:
    return plan.annotations.setdefault(group, {
        "Ignore": 0, "Place": 0, "Migrate": 0, "Stop": 0, "InPlaceUpdate": 0,
        "DestructiveUpdate": 0, "Canary": 0, "Preemptions": 0, "Reconnect": 0,
        "RescheduleNow": 0, "RescheduleLater": 0, "Disconnect": 0})


_INDEX = re.compile(r"\[(\d+)\]$")


def name_index(name: str) -> int:
    m = _INDEX.search(name)
    return int(m.group(1)) if m else 0


def is_current(alloc: dict[str, Any], job: dict[str, Any]) -> bool:
    aj = alloc["Job"]
    return bool(aj["JobModifyIndex"] == job["JobModifyIndex"]
                and aj["CreateIndex"] == job["CreateIndex"])


def reschedule_time(alloc: dict[str, Any], policy: dict[str, Any] | None,
                    now: int) -> int | None:
    """When a failed alloc may be replaced, or None if its policy is exhausted."""
    if not policy:
        return None
    events = (alloc.get("RescheduleTracker") or {}).get("Events") or []
    if not policy.get("Unlimited"):
        attempts = int(policy.get("Attempts") or 0)
        interval = int(policy.get("Interval") or 0)
        recent = [e for e in events if now - e["RescheduleTime"] < interval]
        if attempts == 0 or len(recent) >= attempts:
            return None
    delay = int(policy.get("Delay") or 0)
    fn = policy.get("DelayFunction") or "constant"
    max_delay = int(policy.get("MaxDelay") or 0)
    n = len(events)
    if fn == "exponential":
        delay = delay * (2 ** n)
    elif fn == "fibonacci":
        a, b = delay, delay
        for _ in range(n):
            a, b = b, a + b
        delay = a
    if max_delay and delay > max_delay:
        delay = max_delay
    return failed_at(alloc, now) + delay


def failed_at(alloc: dict[str, Any], now: int) -> int:
    """When the alloc failed: its last task finish (Nomad's LastEventTime), or when it
    was marked unhealthy. Not ModifyTime, which later bookkeeping writes move."""
    from .deployments import parse_rfc3339

    latest = 0.0
    for state in (alloc.get("TaskStates") or {}).values():
        latest = max(latest, parse_rfc3339(state.get("FinishedAt")) or 0.0)
    if not latest:
        latest = parse_rfc3339((alloc.get("DeploymentStatus") or {}).get("Timestamp")) or 0.0
    return int(latest * 1e9) if latest else int(alloc.get("CreateTime") or now)


def next_delay(alloc: dict[str, Any], policy: dict[str, Any]) -> int:
    base = failed_at(alloc, 0)
    when = reschedule_time(alloc, policy, base)
    return max(0, (when or 0) - base)


def group_done(ds: dict[str, Any]) -> bool:
    if ds["DesiredCanaries"] > 0 and not ds["Promoted"]:
        return False
    return bool(ds["HealthyAllocs"] >= ds["DesiredTotal"])


def reconcile(job: dict[str, Any] | None, allocs: list[dict[str, Any]],
              latest: dict[str, Any] | None, now: int) -> Plan:
    plan = Plan(job=job)
    if job is None or job.get("Stop"):
        for a in allocs:
            if not alloc_terminal(a):
                plan.stop.append((a, ALLOC_NOT_NEEDED))
                _ann(plan, a["TaskGroup"])["Stop"] += 1
        if latest is not None and deployment_active(latest):
            plan.cancel_deployment = (latest, DESC_STOPPED)
        return plan

    dep = latest
    if dep is not None and (dep["JobCreateIndex"] != job["CreateIndex"]
                            or dep["JobVersion"] != job["Version"]):
        if deployment_active(dep):
            plan.cancel_deployment = (dep, DESC_NEWER)
        dep = None

    groups = {g["Name"]: g for g in job["TaskGroups"]}
    for a in allocs:
        if a["TaskGroup"] not in groups and not alloc_terminal(a):
            plan.stop.append((a, ALLOC_NOT_NEEDED))
            _ann(plan, a["TaskGroup"])["Stop"] += 1

    # First pass: what each group needs, to know whether this version needs a deployment.
    per_group: dict[str, dict[str, Any]] = {}
    needs_deployment = False
    for name, group in groups.items():
        info = _classify(job, group, [a for a in allocs if a["TaskGroup"] == name], now)
        per_group[name] = info
        update = group.get("Update")
        if (job["Type"] == "service" and update and int(update.get("MaxParallel") or 0) > 0
                and (info["old"] or info["missing"] > 0 or info["inplace"])):
            needs_deployment = True

    if dep is None and needs_deployment:
        dep = _new_deployment(job, groups, per_group, now)
        plan.create_deployment = dep
    plan.deployment = dep if dep is not None and deployment_active(dep) else None

    for name, group in groups.items():
        _plan_group(plan, job, group, per_group[name], dep, now)

    if (dep is not None and dep["Status"] == "running" and plan.create_deployment is None
            and all(group_done(ds) for ds in dep["TaskGroups"].values())
            and not any(per_group[g]["old"] for g in dep["TaskGroups"])):
        plan.mark_successful = True
    return plan


def _classify(job: dict[str, Any], group: dict[str, Any], allocs: list[dict[str, Any]],
              now: int) -> dict[str, Any]:
    policy = group.get("ReschedulePolicy")
    live: list[dict[str, Any]] = []
    reschedule_now: list[dict[str, Any]] = []
    later: list[tuple[dict[str, Any], int]] = []
    for a in allocs:
        if a["DesiredStatus"] != "run":
            continue
        marked = bool((a.get("DesiredTransition") or {}).get("Reschedule"))
        if a["ClientStatus"] == "failed" or (marked and not client_terminal(a)):
            if a.get("NextAllocation"):
                continue
            when = reschedule_time(a, policy, now)
            if (a.get("DesiredTransition") or {}).get("ForceReschedule"):
                when = now
            if when is None:
                live.append(a)  # exhausted: it keeps its slot, as in Nomad
            elif when <= now + 5_000_000:  # timers fire a hair early
                reschedule_now.append(a)
            else:
                later.append((a, when))
                live.append(a)
            continue
        if client_terminal(a):
            continue
        live.append(a)
    key = group_key(job, group["Name"])
    new, old, inplace = [], [], []
    for a in live:
        if is_current(a, job):
            new.append(a)
        elif (not client_terminal(a) and group_key(a["Job"], group["Name"]) == key):
            inplace.append(a)
            new.append(a)
        else:
            old.append(a)
    count = int(group.get("Count") or 0)
    missing = count - len(new) - len(old) - len(reschedule_now)
    return {"live": live, "new": new, "old": old, "inplace": inplace, "count": count,
            "missing": missing, "reschedule_now": reschedule_now, "later": later}


def _new_deployment(job: dict[str, Any], groups: dict[str, dict[str, Any]],
                    per_group: dict[str, dict[str, Any]], now: int) -> dict[str, Any]:
    from .ids import new_id

    tgs: dict[str, Any] = {}
    requires_promotion = False
    all_auto = True
    for name, group in groups.items():
        u = group.get("Update") or {}
        if int(u.get("MaxParallel") or 0) <= 0:
            continue
        canaries = int(u.get("Canary") or 0) if per_group[name]["old"] else 0
        if canaries:
            requires_promotion = True
            all_auto = all_auto and bool(u.get("AutoPromote"))
        tgs[name] = {
            "AutoRevert": bool(u.get("AutoRevert")), "AutoPromote": bool(u.get("AutoPromote")),
            "ProgressDeadline": int(u.get("ProgressDeadline") or 0),
            "RequireProgressBy": "0001-01-01T00:00:00Z", "Promoted": False,
            "PlacedCanaries": None, "DesiredCanaries": canaries,
            "DesiredTotal": int(group.get("Count") or 0), "PlacedAllocs": 0,
            "HealthyAllocs": 0, "UnhealthyAllocs": 0,
        }
    desc = DESC_RUNNING
    if requires_promotion:
        desc = DESC_AUTO_PROMOTION if all_auto else DESC_NEEDS_PROMOTION
    return {
        "ID": new_id(), "Namespace": job["Namespace"], "JobID": job["ID"],
        "JobVersion": job["Version"], "JobModifyIndex": job["JobModifyIndex"],
        "JobSpecModifyIndex": job["JobModifyIndex"], "JobCreateIndex": job["CreateIndex"],
        "IsMultiregion": False, "TaskGroups": tgs, "Status": "running",
        "StatusDescription": desc, "EvalPriority": job.get("Priority") or 50,
        "CreateIndex": 0, "ModifyIndex": 0, "CreateTime": now, "ModifyTime": now,
    }


def _free_indexes(taken: set[int]) -> Any:
    i = 0
    while True:
        if i not in taken:
            yield i
        i += 1


def _plan_group(plan: Plan, job: dict[str, Any], group: dict[str, Any],
                info: dict[str, Any], dep: dict[str, Any] | None, now: int) -> None:
    name = group["Name"]
    ann = _ann(plan, name)
    prefix = f"{job['ID']}.{name}"
    new, old = list(info["new"]), list(info["old"])
    count = info["count"]
    for a in info["inplace"]:
        plan.inplace.append(a)
        ann["InPlaceUpdate"] += 1
    # Reschedules follow the group's policy whatever the deployment does.
    for a in info["reschedule_now"]:
        if not client_terminal(a):
            plan.stop.append((a, ALLOC_RESCHEDULED))  # unhealthy, replaced on the watcher's word
        plan.place.append(Placement(name, a["Name"], previous=a, reschedule=True))
        ann["RescheduleNow"] += 1
        ann["Place"] += 1
    for a, when in info["later"]:
        plan.reschedule_later.append((a, when))
        ann["RescheduleLater"] += 1
    taken = {name_index(a["Name"]) for a in new + old + info["reschedule_now"]}
    free = _free_indexes(taken)

    ds = dep["TaskGroups"].get(name) if dep is not None else None
    status = dep["Status"] if dep is not None else None
    if ds is not None and status in ("failed", "cancelled", "paused"):
        ann["Ignore"] += len(new) + len(old) - len(info["inplace"])
        return
    rolling = ds is not None and status == "running"

    if rolling and ds is not None and ds["DesiredCanaries"] > 0 and not ds["Promoted"]:
        canaries = [a for a in new if (a.get("DeploymentStatus") or {}).get("Canary")
                    and a.get("DeploymentID") == dep["ID"]]  # type: ignore[index]
        want = ds["DesiredCanaries"] - len(canaries)
        reuse = sorted(old, key=lambda a: name_index(a["Name"]))
        for i in range(max(0, want)):
            idx = name_index(reuse[i]["Name"]) if i < len(reuse) else next(free)
            plan.place.append(Placement(name, f"{prefix}[{idx}]", canary=True))
            ann["Canary"] += 1
        non_canary_new = len(new) - len(canaries)
        for _ in range(max(0, count - len(old) - non_canary_new)):
            plan.place.append(Placement(name, f"{prefix}[{next(free)}]"))
            ann["Place"] += 1
        ann["Ignore"] += len(new) + len(old) - len(info["inplace"])
        return

    # Too many: stop old ones first, then the highest indexes.
    excess = len(new) + len(old) + len(info["reschedule_now"]) - count
    if excess > 0:
        victims = sorted(old, key=lambda a: -name_index(a["Name"]))
        victims += sorted(new, key=lambda a: -name_index(a["Name"]))
        for a in victims[:excess]:
            plan.stop.append((a, ALLOC_NOT_NEEDED))
            ann["Stop"] += 1
            if a in old:
                old.remove(a)
            else:
                new.remove(a)
    for _ in range(max(0, info["missing"])):
        plan.place.append(Placement(name, f"{prefix}[{next(free)}]"))
        ann["Place"] += 1

    if not old:
        ann["Ignore"] += len(new) - len(info["inplace"])
        return
    if rolling:
        assert dep is not None
        in_flight = [a for a in new if a.get("DeploymentID") == dep["ID"]
                     and (a.get("DeploymentStatus") or {}).get("Healthy") is not True]
        placed_now = len([p for p in plan.place if p.group == name])
        max_parallel = int((group.get("Update") or {}).get("MaxParallel") or 0)
        limit = max(0, max_parallel - len(in_flight) - placed_now)
    elif dep is None and job["Type"] == "service" and group.get("Update") and int(
            group["Update"].get("MaxParallel") or 0) > 0 and status is None:
        limit = 0  # a deployment is needed but none exists for this version: wait
    else:
        limit = len(old)
    for a in sorted(old, key=lambda a: name_index(a["Name"]))[:limit]:
        plan.stop.append((a, ALLOC_UPDATING))
        plan.place.append(Placement(name, a["Name"], previous=a))
        ann["DestructiveUpdate"] += 1
    ann["Ignore"] += len(new) - len(info["inplace"]) + max(0, len(old) - limit)
