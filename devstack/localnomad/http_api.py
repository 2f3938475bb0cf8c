"""Nomad's `/v1/` HTTP API over aiohttp: routes, shapes, blocking queries, errors.

Each handler decodes the request the way Nomad's agent does (wire.py), calls the
server, and answers with minified JSON plus `X-Nomad-Index`, `X-Nomad-KnownLeader`
and `X-Nomad-LastContact`, or with a plain-text error and Nomad's status code. List
and read endpoints block on `?index=` against the per-table indexes. The event stream
and client log streaming are here too. Test-only routes live in control.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from . import wire
from .bexpr import FilterError, compile_filter
from .durations import MINUTE, S, parse_go_duration
from .errors import ApiError
from .events import Subscription, parse_topics
from .server import Server
from .state import alloc_terminal

SERVER_KEY: web.AppKey[Server] = web.AppKey("server", Server)
HEARTBEAT_KEY: web.AppKey[float] = web.AppKey("heartbeat_s", float)

_encoder = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_WAIT_NS = 10 * MINUTE
DEFAULT_WAIT_NS = 5 * MINUTE


# ---- helpers ---------------------------------------------------------------------------
def parse_bool(value: str | None) -> bool:
    return (value or "").strip() in ("1", "t", "T", "true", "TRUE", "True")


def _server(request: web.Request) -> Server:
    return request.app[SERVER_KEY]


def _ns(request: web.Request) -> str:
    return request.query.get("namespace") or "default"


def _ns_match(request: web.Request, ns: str) -> bool:
    want = _ns(request)
    return want == "*" or want == ns


def json_response(request: web.Request, data: Any, index: int | None = None,
                  status: int = 200) -> web.Response:
    if "pretty" in request.query:
        import json

        body = json.dumps(msgspec.to_builtins(data), indent=4).encode()
    else:
        body = _encoder.encode(data)
    resp = web.Response(body=body, status=status, content_type="application/json")
    if index is not None:
        resp.headers["X-Nomad-Index"] = str(index)
    resp.headers["X-Nomad-KnownLeader"] = "true"
    resp.headers["X-Nomad-LastContact"] = "0"
    return resp


async def blocking(request: web.Request, index_fn: Callable[[], int]) -> int:
    q = request.query
    try:
        min_index = int(q.get("index") or 0)
        if min_index < 0:
            raise ValueError
    except ValueError:
        raise ApiError(400, "Invalid index") from None
    wait_ns = DEFAULT_WAIT_NS
    if "wait" in q:
        try:
            wait_ns = parse_go_duration(q["wait"])
        except ValueError:
            raise ApiError(400, "Invalid wait time") from None
        wait_ns = min(max(wait_ns, 0), MAX_WAIT_NS)
    return await _server(request).state.block(min_index, wait_ns / S, index_fn)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "http: request body too large") from None


async def decode(request: web.Request, spec: wire.Struct, allow_empty: bool = False
                 ) -> dict[str, Any]:
    body = await read_body(request)
    if allow_empty and not body.strip():
        return {}
    try:
        return wire.decode(body, spec)
    except wire.DecodeError as exc:
        raise ApiError(400, str(exc)) from None


def _filter(request: web.Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    expr = request.query.get("filter")
    if not expr:
        return items
    try:
        pred = compile_filter(expr)
    except FilterError as exc:
        raise ApiError(400, f"failed to read filter expression: {exc}") from None
    return [i for i in items if pred(i)]


def _paginate(request: web.Request, items: list[dict[str, Any]], by_create_index: bool = False
              ) -> tuple[list[dict[str, Any]], str]:
    """`per_page`/`next_token`/`reverse` over a list already in its natural order. Tokens
    are the ID, or `CreateIndex.ID` for lists ordered by creation."""

    def key(item: dict[str, Any]) -> tuple[int, str]:
        return (int(item.get("CreateIndex") or 0) if by_create_index else 0, str(item["ID"]))

    def parse(token: str) -> tuple[int, str]:
        if by_create_index:
            idx, _, ident = token.partition(".")
            return (int(idx) if idx.isdigit() else 0, ident)
        return (0, token)

    reverse = parse_bool(request.query.get("reverse"))
    items = sorted(items, key=key, reverse=reverse)
    token = request.query.get("next_token")
    if token:
        start = parse(token)
        items = [i for i in items if (key(i) <= start if reverse else key(i) >= start)]
    per_page = int(request.query.get("per_page") or 0) if (
        request.query.get("per_page") or "0").isdigit() else 0
    if per_page > 0 and len(items) > per_page:
        nxt = items[per_page]
        text = f"{nxt['CreateIndex']}.{nxt['ID']}" if by_create_index else str(nxt["ID"])
        return items[:per_page], text
    return items, ""


# ---- shapes ----------------------------------------------------------------------------
def job_summary(server: Server, job: dict[str, Any]) -> dict[str, Any]:
    key = (job["Namespace"], job["ID"])
    summary = {g["Name"]: {"Queued": 0, "Complete": 0, "Failed": 0, "Running": 0,
                           "Starting": 0, "Lost": 0, "Unknown": 0}
               for g in job["TaskGroups"]}
    column = {"pending": "Starting", "running": "Running", "complete": "Complete",
              "failed": "Failed", "lost": "Lost", "unknown": "Unknown"}
    for a in server.state.job_allocs(key):
        if a["Job"]["CreateIndex"] != job["CreateIndex"] or a["TaskGroup"] not in summary:
            continue
        col = column.get(a["ClientStatus"])
        if col:
            summary[a["TaskGroup"]][col] += 1
    return {"JobID": job["ID"], "Namespace": job["Namespace"], "Summary": summary,
            "Children": {"Pending": 0, "Running": 0, "Dead": 0},
            "CreateIndex": job["CreateIndex"], "ModifyIndex": job["ModifyIndex"]}


def job_stub(server: Server, job: dict[str, Any], meta: bool) -> dict[str, Any]:
    return {
        "ID": job["ID"], "ParentID": job["ParentID"], "Name": job["Name"],
        "Namespace": job["Namespace"], "Datacenters": job["Datacenters"],
        "Multiregion": job["Multiregion"], "Type": job["Type"], "Priority": job["Priority"],
        "Periodic": bool(job["Periodic"]), "ParameterizedJob": bool(job["ParameterizedJob"]),
        "Stop": job["Stop"], "Status": job["Status"],
        "StatusDescription": job["StatusDescription"],
        "JobSummary": job_summary(server, job), "CreateIndex": job["CreateIndex"],
        "ModifyIndex": job["ModifyIndex"], "JobModifyIndex": job["JobModifyIndex"],
        "SubmitTime": job["SubmitTime"], "NodePool": job["NodePool"],
        "Version": job["Version"], "Meta": job["Meta"] if meta else None,
    }


def alloc_stub(alloc: dict[str, Any], resources: bool = False,
               task_states: bool = True) -> dict[str, Any]:
    job = alloc["Job"]
    return {
        "ID": alloc["ID"], "EvalID": alloc["EvalID"], "Name": alloc["Name"],
        "Namespace": alloc["Namespace"], "NodeID": alloc["NodeID"],
        "NodeName": alloc["NodeName"], "JobID": alloc["JobID"], "JobType": job["Type"],
        "JobVersion": job["Version"], "TaskGroup": alloc["TaskGroup"],
        "AllocatedResources": alloc["AllocatedResources"] if resources else None,
        "DesiredStatus": alloc["DesiredStatus"],
        "DesiredDescription": alloc["DesiredDescription"],
        "ClientStatus": alloc["ClientStatus"], "ClientDescription": alloc["ClientDescription"],
        "DesiredTransition": alloc["DesiredTransition"],
        "TaskStates": alloc["TaskStates"] if task_states else None,
        "DeploymentStatus": alloc["DeploymentStatus"],
        "FollowupEvalID": alloc["FollowupEvalID"], "NextAllocation": alloc["NextAllocation"],
        "PreviousAllocation": alloc["PreviousAllocation"],
        "RescheduleTracker": alloc["RescheduleTracker"],
        "PreemptedAllocations": alloc["PreemptedAllocations"],
        "PreemptedByAllocation": alloc["PreemptedByAllocation"],
        "CreateIndex": alloc["CreateIndex"], "ModifyIndex": alloc["ModifyIndex"],
        "CreateTime": alloc["CreateTime"], "ModifyTime": alloc["ModifyTime"],
    }


def _job_or_404(server: Server, request: web.Request) -> dict[str, Any]:
    job = server.state.jobs.get((_ns(request), request.match_info["id"]))
    if job is None:
        raise ApiError(404, "job not found")
    return job


# ---- jobs ------------------------------------------------------------------------------
async def jobs_list(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("jobs"))
    prefix = request.query.get("prefix") or ""
    meta = parse_bool(request.query.get("meta"))
    jobs = [j for (ns, jid), j in sorted(server.state.jobs.items())
            if _ns_match(request, ns) and jid.startswith(prefix)]
    jobs = _filter(request, jobs)
    stubs = [job_stub(server, j, meta) for j in jobs]
    page, token = _paginate(request, stubs)
    resp = json_response(request, page, index)
    if token:
        resp.headers["X-Nomad-NextToken"] = token
    return resp


async def _register(request: web.Request, path_id: str | None) -> web.Response:
    server = _server(request)
    body = await decode(request, wire.REGISTER_REQUEST)
    raw_job = body.get("Job")
    if not raw_job:
        raise ApiError(400, "Job must be specified")
    if not raw_job.get("ID"):
        raise ApiError(400, "Job ID hasn't been provided")
    if path_id is not None and raw_job["ID"] != path_id:
        raise ApiError(400, "Job ID does not match name")
    eval_priority = int(body.get("EvalPriority") or 0)
    if eval_priority and not 1 <= eval_priority <= 100:
        raise ApiError(400, "Eval priority must be between 1 and 100 inclusively")
    job = server.prepare_job(raw_job, request.query.get("namespace"), body.get("Namespace"))
    result = server.register(job, enforce=bool(body.get("EnforceIndex")),
                             jmi=int(body.get("JobModifyIndex") or 0),
                             eval_priority=eval_priority,
                             preserve_counts=bool(body.get("PreserveCounts")),
                             submission=body.get("Submission"))
    return json_response(request, result, result["Index"])


async def jobs_register(request: web.Request) -> web.Response:
    return await _register(request, None)


async def job_handler(request: web.Request) -> web.Response:
    server = _server(request)
    if request.method in ("PUT", "POST"):
        return await _register(request, request.match_info["id"])
    if request.method == "DELETE":
        result = server.deregister(_ns(request), request.match_info["id"],
                                   parse_bool(request.query.get("purge")))
        return json_response(request, result, result["Index"])
    key = (_ns(request), request.match_info["id"])

    def idx() -> int:
        job = server.state.jobs.get(key)
        return job["ModifyIndex"] if job else server.state.max_index("jobs")

    index = await blocking(request, idx)
    return json_response(request, _job_or_404(server, request), index)


async def job_versions(request: web.Request) -> web.Response:
    server = _server(request)
    key = (_ns(request), request.match_info["id"])
    index = await blocking(request, lambda: server.state.max_index("job_version"))
    versions = server.state.versions.get(key)
    if not versions:
        raise ApiError(404, "job versions not found")
    diffs = None
    if parse_bool(request.query.get("diffs")):
        from .diff import job_diff

        diffs = []
        for i in range(len(versions) - 1):
            diffs.append(job_diff(versions[i + 1], versions[i], set(), {}))
    return json_response(request, {"Versions": versions, "Diffs": diffs, "Index": index,
                                   "KnownLeader": True, "LastContact": 0, "NextToken": ""},
                         index)


async def job_submission(request: web.Request) -> web.Response:
    server = _server(request)
    version = int(request.query.get("version") or 0)
    sub = server.state.submissions.get((_ns(request), request.match_info["id"], version))
    if sub is None:
        raise ApiError(404, "job source not found")
    return json_response(request, sub, server.state.index)


async def job_allocations(request: web.Request) -> web.Response:
    server = _server(request)
    key = (_ns(request), request.match_info["id"])
    index = await blocking(request, lambda: server.state.max_index("allocs"))
    job = server.state.jobs.get(key)
    include_all = parse_bool(request.query.get("all"))
    allocs = sorted(server.state.job_allocs(key), key=lambda a: a["CreateIndex"])
    if job is not None and not include_all:
        allocs = [a for a in allocs if a["Job"]["CreateIndex"] == job["CreateIndex"]]
    return json_response(request, [alloc_stub(a) for a in allocs], index)


async def job_evaluations(request: web.Request) -> web.Response:
    server = _server(request)
    key = (_ns(request), request.match_info["id"])
    index = await blocking(request, lambda: server.state.max_index("evals"))
    return json_response(request, server.state.job_evals(key), index)


async def job_deployments(request: web.Request) -> web.Response:
    server = _server(request)
    key = (_ns(request), request.match_info["id"])
    index = await blocking(request, lambda: server.state.max_index("deployment"))
    job = server.state.jobs.get(key)
    deps = server.state.job_deployments(key)
    if job is not None and not parse_bool(request.query.get("all")):
        deps = [d for d in deps if d["JobCreateIndex"] == job["CreateIndex"]]
    return json_response(request, deps, index)


async def job_latest_deployment(request: web.Request) -> web.Response:
    server = _server(request)
    key = (_ns(request), request.match_info["id"])

    def idx() -> int:
        dep = server.state.latest_deployment(key)
        return dep["ModifyIndex"] if dep else server.state.max_index("deployment")

    index = await blocking(request, idx)
    dep = server.state.latest_deployment(key)
    job = server.state.jobs.get(key)
    if dep is not None and job is not None and dep["JobCreateIndex"] != job["CreateIndex"]:
        dep = None
    return json_response(request, dep, index)


async def job_summary_handler(request: web.Request) -> web.Response:
    server = _server(request)
    key = (_ns(request), request.match_info["id"])
    index = await blocking(request, lambda: server.state.max_index("job_summary"))
    job = server.state.jobs.get(key)
    if job is None:
        raise ApiError(404, "job not found")
    return json_response(request, job_summary(server, job), index)


async def job_plan(request: web.Request) -> web.Response:
    server = _server(request)
    body = await decode(request, wire.PLAN_REQUEST)
    raw_job = body.get("Job")
    if not raw_job:
        raise ApiError(400, "Job must be specified")
    if not raw_job.get("ID"):
        raise ApiError(400, "Job ID hasn't been provided")
    if raw_job["ID"] != request.match_info["id"]:
        raise ApiError(400, "Job ID does not match")
    job = server.prepare_job(raw_job, request.query.get("namespace"), body.get("Namespace"))
    result = server.plan(job, bool(body.get("Diff")))
    return json_response(request, result, result["Index"])


async def job_revert(request: web.Request) -> web.Response:
    server = _server(request)
    body = await decode(request, wire.REVERT_REQUEST)
    if not body.get("JobID"):
        raise ApiError(400, "JobID must be specified")
    if body["JobID"] != request.match_info["id"]:
        raise ApiError(400, "Job ID does not match")
    epv = body.get("EnforcePriorVersion")
    result = server.revert(_ns(request), body["JobID"], int(body.get("JobVersion") or 0),
                           int(epv) if epv is not None else None)
    return json_response(request, result, result["Index"])


async def job_stable(request: web.Request) -> web.Response:
    server = _server(request)
    body = await decode(request, wire.STABLE_REQUEST)
    if not body.get("JobID"):
        raise ApiError(400, "JobID must be specified")
    if body["JobID"] != request.match_info["id"]:
        raise ApiError(400, "Job ID does not match")
    result = server.set_stable(_ns(request), body["JobID"], int(body.get("JobVersion") or 0),
                               bool(body.get("Stable")))
    return json_response(request, result, result["Index"])


async def job_evaluate(request: web.Request) -> web.Response:
    server = _server(request)
    body = await decode(request, wire.EVALUATE_REQUEST, allow_empty=True)
    if body.get("JobID") and body["JobID"] != request.match_info["id"]:
        raise ApiError(400, "Job ID does not match")
    force = bool((body.get("EvalOptions") or {}).get("ForceReschedule"))
    result = server.evaluate(_ns(request), request.match_info["id"], force)
    return json_response(request, result, result["Index"])


async def job_scale(request: web.Request) -> web.Response:
    server = _server(request)
    if request.method == "GET":
        job = _job_or_404(server, request)
        groups = {}
        for g in job["TaskGroups"]:
            allocs = [a for a in server.state.job_allocs((job["Namespace"], job["ID"]))
                      if a["TaskGroup"] == g["Name"] and not alloc_terminal(a)]
            groups[g["Name"]] = {
                "Desired": g["Count"], "Placed": len(allocs),
                "Running": sum(1 for a in allocs if a["ClientStatus"] == "running"),
                "Healthy": sum(1 for a in allocs
                               if (a.get("DeploymentStatus") or {}).get("Healthy") is True),
                "Unhealthy": sum(1 for a in allocs
                                 if (a.get("DeploymentStatus") or {}).get("Healthy") is False),
                "Events": None}
        return json_response(request, {
            "JobID": job["ID"], "Namespace": job["Namespace"],
            "JobCreateIndex": job["CreateIndex"], "JobModifyIndex": job["JobModifyIndex"],
            "JobStopped": job["Stop"], "TaskGroups": groups}, job["ModifyIndex"])
    body = await decode(request, wire.SCALE_REQUEST)
    target = body.get("Target") or {}
    group = target.get("Group")
    if not group:
        raise ApiError(400, "missing task group name for scaling action")
    count = body.get("Count")
    result = server.scale(_ns(request), request.match_info["id"], group,
                          int(count) if count is not None else None,
                          bool(body.get("EnforceIndex")), int(body.get("JobModifyIndex") or 0))
    return json_response(request, result, result["Index"])


async def job_services(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("service_registrations"))
    jid = request.match_info["id"]
    regs = [r for r in server.state.services.values()
            if r["JobID"] == jid and r["Namespace"] == _ns(request)]
    return json_response(request, regs, index)


async def validate_job_handler(request: web.Request) -> web.Response:
    server = _server(request)
    body = await decode(request, wire.VALIDATE_REQUEST)
    raw_job = body.get("Job")
    if not raw_job:
        raise ApiError(400, "Job must be specified")
    from .canonicalize import canonicalize_job
    from .validation import multierror, validate_job

    ns = request.query.get("namespace") or body.get("Namespace") or raw_job.get(
        "Namespace") or "default"
    job = canonicalize_job(dict(raw_job, Namespace=ns))
    errors = validate_job(job)
    return json_response(request, {
        "DriverConfigValidated": not errors, "ValidationErrors": errors or None,
        "Error": multierror(errors) if errors else "", "Warnings": ""}, server.state.index)


# ---- deployments -----------------------------------------------------------------------
async def deployments_list(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("deployment"))
    prefix = request.query.get("prefix") or ""
    deps = sorted((d for d in server.state.deployments.values()
                   if _ns_match(request, d["Namespace"]) and d["ID"].startswith(prefix)),
                  key=lambda d: d["CreateIndex"])
    deps = _filter(request, deps)
    page, token = _paginate(request, deps, by_create_index=True)
    resp = json_response(request, page, index)
    if token:
        resp.headers["X-Nomad-NextToken"] = token
    return resp


async def deployment_read(request: web.Request) -> web.Response:
    server = _server(request)
    dep_id = request.match_info["id"]

    def idx() -> int:
        dep = server.state.deployments.get(dep_id)
        return dep["ModifyIndex"] if dep else server.state.max_index("deployment")

    index = await blocking(request, idx)
    dep = server.state.deployments.get(dep_id)
    if dep is None:
        raise ApiError(404, "deployment not found")
    return json_response(request, dep, index)


async def deployment_allocations(request: web.Request) -> web.Response:
    server = _server(request)
    dep_id = request.match_info["id"]
    index = await blocking(request, lambda: server.state.max_index("allocs"))
    dep = server.state.deployments.get(dep_id)
    if dep is None:
        return json_response(request, [], index)
    allocs = [a for a in server.state.job_allocs((dep["Namespace"], dep["JobID"]))
              if a.get("DeploymentID") == dep_id]
    allocs.sort(key=lambda a: a["CreateIndex"])
    return json_response(request, [alloc_stub(a) for a in allocs], index)


def _dep_for_write(request: web.Request, body: dict[str, Any], need_id: bool
                   ) -> dict[str, Any]:
    path_id = request.match_info["id"]
    if need_id:
        if not body.get("DeploymentID"):
            raise ApiError(400, "DeploymentID must be specified")
        if body["DeploymentID"] != path_id:
            raise ApiError(400, "Deployment ID does not match")
    dep = _server(request).state.deployments.get(path_id)
    if dep is None:
        raise ApiError(500, "deployment not found")
    return dep


def _dep_write_response(request: web.Request, txn: Any, dep: dict[str, Any],
                        with_revert: bool) -> web.Response:
    evals = [e for e in _server(request).state.evals.values()
             if e["CreateIndex"] == txn.index]
    ev = evals[-1] if evals else None
    result: dict[str, Any] = {
        "EvalID": ev["ID"] if ev else "", "EvalCreateIndex": ev["CreateIndex"] if ev else 0,
        "DeploymentModifyIndex": dep["ModifyIndex"], "Index": txn.index, "LastContact": 0,
        "KnownLeader": True}
    if with_revert:
        result["RevertedJobVersion"] = txn.result.get("RevertedJobVersion")
    return json_response(request, result, txn.index)


async def deployment_fail(request: web.Request) -> web.Response:
    body = await decode(request, wire.DEPLOYMENT_FAIL, allow_empty=True)
    dep = _dep_for_write(request, body, need_id=False)
    from .deployments import DeploymentError

    try:
        txn = _server(request).watcher.user_fail(dep)
    except DeploymentError as exc:
        raise ApiError(500, str(exc)) from None
    return _dep_write_response(request, txn, dep, with_revert=True)


async def deployment_pause(request: web.Request) -> web.Response:
    body = await decode(request, wire.DEPLOYMENT_PAUSE)
    dep = _dep_for_write(request, body, need_id=True)
    from .deployments import DeploymentError

    try:
        txn = _server(request).watcher.pause(dep, bool(body.get("Pause")))
    except DeploymentError as exc:
        raise ApiError(500, str(exc)) from None
    return _dep_write_response(request, txn, dep, with_revert=False)


async def deployment_promote(request: web.Request) -> web.Response:
    body = await decode(request, wire.DEPLOYMENT_PROMOTE)
    dep = _dep_for_write(request, body, need_id=True)
    from .deployments import DeploymentError

    groups = None if body.get("All") else (body.get("Groups") or [])
    if groups is not None and not groups:
        raise ApiError(400, "Must specify either All or Groups")
    try:
        txn = _server(request).watcher.promote(dep, groups)
    except DeploymentError as exc:
        raise ApiError(500, str(exc)) from None
    return _dep_write_response(request, txn, dep, with_revert=False)


async def deployment_alloc_health(request: web.Request) -> web.Response:
    body = await decode(request, wire.DEPLOYMENT_HEALTH)
    dep = _dep_for_write(request, body, need_id=True)
    from .deployments import DeploymentError

    try:
        txn = _server(request).watcher.set_health(
            dep, body.get("HealthyAllocationIDs") or [], body.get("UnhealthyAllocationIDs") or [])
    except DeploymentError as exc:
        raise ApiError(500, str(exc)) from None
    return _dep_write_response(request, txn, dep, with_revert=True)


# ---- allocations -----------------------------------------------------------------------
async def allocations_list(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("allocs"))
    prefix = request.query.get("prefix") or ""
    allocs = sorted((a for a in server.state.allocs.values()
                     if _ns_match(request, a["Namespace"]) and a["ID"].startswith(prefix)),
                    key=lambda a: a["CreateIndex"])
    allocs = _filter(request, allocs)
    resources = parse_bool(request.query.get("resources"))
    task_states = request.query.get("task_states", "true") != "false"
    page, token = _paginate(request, allocs, by_create_index=True)
    resp = json_response(request, [alloc_stub(a, resources, task_states) for a in page], index)
    if token:
        resp.headers["X-Nomad-NextToken"] = token
    return resp


async def allocation_read(request: web.Request) -> web.Response:
    server = _server(request)
    alloc_id = request.match_info["id"]

    def idx() -> int:
        a = server.state.allocs.get(alloc_id)
        return a["ModifyIndex"] if a else server.state.max_index("allocs")

    index = await blocking(request, idx)
    alloc = server.state.allocs.get(alloc_id)
    if alloc is None:
        raise ApiError(404, "alloc not found")
    return json_response(request, alloc, index)


async def allocation_stop(request: web.Request) -> web.Response:
    result = _server(request).stop_alloc(request.match_info["id"])
    return json_response(request, result, result["Index"])


async def allocation_services(request: web.Request) -> web.Response:
    server = _server(request)
    alloc_id = request.match_info["id"]
    regs = [r for r in server.state.services.values() if r["AllocID"] == alloc_id]
    return json_response(request, regs, server.state.max_index("service_registrations"))


async def allocation_checks(request: web.Request) -> web.Response:
    server = _server(request)
    alloc_id = request.match_info["id"]
    if alloc_id not in server.state.allocs:
        raise ApiError(404, "alloc not found")
    return json_response(request, server.client.checks_of(alloc_id), server.state.index)


async def fs_logs(request: web.Request) -> web.StreamResponse:
    server = _server(request)
    alloc_id = request.match_info["id"]
    alloc = server.state.allocs.get(alloc_id)
    if alloc is None:
        raise ApiError(404, f"Unknown allocation \"{alloc_id}\"")
    q = request.query
    task = q.get("task")
    if not task:
        raise ApiError(400, "must include task name")
    log_type = q.get("type")
    if log_type not in ("stdout", "stderr"):
        raise ApiError(400, "must include type (stdout|stderr)")
    origin = q.get("origin") or "start"
    if origin not in ("start", "end"):
        raise ApiError(400, "origin must be start or end")
    try:
        offset = int(q.get("offset") or 0)
    except ValueError:
        raise ApiError(400, "Invalid offset") from None
    follow = parse_bool(q.get("follow"))
    plain = parse_bool(q.get("plain"))
    rel = f"alloc/logs/{task}.{log_type}.0"
    path = server.client.alloc_root / alloc_id / rel
    read_log = getattr(server.runtime, "read_log", None)

    def content_from(pos: int) -> bytes:
        if read_log is not None:
            data = read_log(alloc_id, task, log_type)
            if data is not None:
                return bytes(data[pos:pos + 64 * 1024])
        if not path.exists():
            return b""
        with path.open("rb") as fh:
            fh.seek(pos)
            return fh.read(64 * 1024)

    def size() -> int:
        if read_log is not None:
            data = read_log(alloc_id, task, log_type)
            if data is not None:
                return len(data)
        return path.stat().st_size if path.exists() else 0

    resp = web.StreamResponse(headers={"Content-Type": "text/plain" if plain
                                       else "application/json"})
    await resp.prepare(request)
    total = size()
    pos = max(0, total - offset) if origin == "end" else min(offset, total)
    while True:
        data = content_from(pos)
        if data:
            if plain:
                await resp.write(data)
            else:
                await resp.write(_encoder.encode({"File": rel, "Offset": pos + len(data),
                                                  "Data": base64.b64encode(data).decode()}))
            pos += len(data)
            continue
        if not follow:
            break
        current = server.state.allocs.get(alloc_id)
        states = (current or {}).get("TaskStates") or {}
        if current is None or (states.get(task) or {}).get("State") == "dead":
            break
        await asyncio.sleep(0.1)
    await resp.write_eof()
    return resp


# ---- evaluations -----------------------------------------------------------------------
async def evaluations_list(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("evals"))
    q = request.query
    prefix = q.get("prefix") or ""
    evals = [e for e in sorted(server.state.evals.values(), key=lambda e: e["CreateIndex"])
             if _ns_match(request, e["Namespace"]) and e["ID"].startswith(prefix)
             and (not q.get("job") or e["JobID"] == q["job"])
             and (not q.get("status") or e["Status"] == q["status"])]
    evals = _filter(request, evals)
    page, token = _paginate(request, evals, by_create_index=True)
    resp = json_response(request, page, index)
    if token:
        resp.headers["X-Nomad-NextToken"] = token
    return resp


async def evaluation_read(request: web.Request) -> web.Response:
    server = _server(request)
    eval_id = request.match_info["id"]

    def idx() -> int:
        e = server.state.evals.get(eval_id)
        return e["ModifyIndex"] if e else server.state.max_index("evals")

    index = await blocking(request, idx)
    ev = server.state.evals.get(eval_id)
    if ev is None:
        raise ApiError(404, "eval not found")
    return json_response(request, ev, index)


async def evaluation_allocations(request: web.Request) -> web.Response:
    server = _server(request)
    eval_id = request.match_info["id"]
    index = await blocking(request, lambda: server.state.max_index("allocs"))
    allocs = [alloc_stub(a) for a in server.state.allocs.values() if a["EvalID"] == eval_id]
    return json_response(request, allocs, index)


# ---- event stream ----------------------------------------------------------------------
class StreamSink:
    """One open event stream, written to synchronously with hand-framed HTTP chunks.

    The response is prepared with chunked encoding by aiohttp; after that each line
    goes straight to the transport so a publish reaches every subscriber in the same
    loop iteration. A reader that lets more than SLOW_READER_BYTES pile up is dropped,
    as Nomad drops slow readers."""

    SLOW_READER_BYTES = 16 * 1024 * 1024

    def __init__(self, request: web.Request, sub: Subscription) -> None:
        assert request.transport is not None
        self.transport = request.transport
        self.sub = sub
        self.closed = asyncio.get_running_loop().create_future()

    def send(self, data: bytes) -> None:
        if self.closed.done():
            return
        if self.transport.is_closing():
            self.close()
            return
        self.transport.write(b"%x\r\n" % len(data) + data + b"\r\n")
        if self.transport.get_write_buffer_size() > self.SLOW_READER_BYTES:
            self.close()

    def deliver(self, env: Any) -> None:
        line = env.line_for(self.sub)
        if line is not None:
            self.send(line)

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
            self.transport.abort()  # as a dropped connection looks to the client


async def event_stream(request: web.Request) -> web.StreamResponse:
    server = _server(request)
    broker = server.broker
    try:
        index = int(request.query.get("index") or 0)
    except ValueError as exc:
        raise ApiError(400, f"Unable to parse index: {exc}") from None
    try:
        topics = parse_topics(request.query.getall("topic", []))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    sub = Subscription(topics=topics, namespace=request.query.get("namespace") or "default")
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    sink = StreamSink(request, sub)
    sink.send(b"{}\n")
    # Replay and subscribe with no await in between, so nothing falls in a gap.
    for env in broker.since(broker.start_cursor(index)):
        sink.deliver(env)
    broker.sinks.add(sink)
    heartbeat_s = request.app[HEARTBEAT_KEY]
    try:
        while not sink.closed.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(sink.closed), heartbeat_s)
            sink.send(b"{}\n")
    finally:
        broker.sinks.discard(sink)
    return resp


# ---- services, status, agent, nodes ----------------------------------------------------
async def services_list(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("service_registrations"))
    by_ns: dict[str, dict[str, set[str]]] = {}
    for reg in server.state.services.values():
        if not _ns_match(request, reg["Namespace"]):
            continue
        tags = by_ns.setdefault(reg["Namespace"], {}).setdefault(reg["ServiceName"], set())
        tags.update(reg["Tags"] or [])
    out = [{"Namespace": ns, "Services": [{"ServiceName": name, "Tags": sorted(tags)}
                                          for name, tags in sorted(services.items())]}
           for ns, services in sorted(by_ns.items())]
    return json_response(request, out, index)


async def service_read(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("service_registrations"))
    name = request.match_info["name"]
    regs = [r for r in server.state.services.values()
            if r["ServiceName"] == name and _ns_match(request, r["Namespace"])]
    regs.sort(key=lambda r: r["CreateIndex"])
    regs = _filter(request, regs)
    return json_response(request, regs, index)


async def status_leader(request: web.Request) -> web.Response:
    return json_response(request, "127.0.0.1:4647")


async def status_peers(request: web.Request) -> web.Response:
    return json_response(request, ["127.0.0.1:4647"])


async def regions(request: web.Request) -> web.Response:
    return json_response(request, ["global"])


def _namespace_obj(name: str) -> dict[str, Any]:
    return {"Name": name, "Description": "Default shared namespace" if name == "default"
            else "", "Quota": "", "Meta": None, "Capabilities": None, "NodePoolConfiguration":
            None, "CreateIndex": 1, "ModifyIndex": 1}


async def namespaces(request: web.Request) -> web.Response:
    server = _server(request)
    out = [_namespace_obj(ns) for ns in sorted(server.state.namespaces)]
    return json_response(request, out, server.state.index)


async def namespace_handler(request: web.Request) -> web.Response:
    """Namespaces exist so jobs can be registered outside `default`; no quotas or ACLs."""
    server = _server(request)
    name = request.match_info["name"]
    if request.method == "GET":
        if name not in server.state.namespaces:
            raise ApiError(404, "namespace not found")
        return json_response(request, _namespace_obj(name), server.state.index)
    if request.method == "DELETE":
        if name == "default":
            raise ApiError(500, "default namespace can not be deleted")
        if any(ns == name for ns, _ in server.state.jobs):
            raise ApiError(500, f'namespace "{name}" has non-terminal jobs in regions: [global]')
        server.state.namespaces.discard(name)
    else:
        server.state.namespaces.add(name)
    server.set_stable_index()
    return json_response(request, {"Index": server.state.index}, server.state.index)


async def agent_self(request: web.Request) -> web.Response:
    server = _server(request)
    return json_response(request, {
        "config": {"Region": "global", "Datacenter": "dc1", "NodeName": "localnomad",
                   "Version": {"Version": "1.11.0", "VersionPrerelease": "",
                               "VersionMetadata": "localnomad"},
                   "Server": {"Enabled": True, "BootstrapExpect": 1},
                   "Client": {"Enabled": True},
                   "ACL": {"Enabled": False},
                   "Runtime": server.runtime.name},
        "member": {"Name": "localnomad.global", "Addr": "127.0.0.1", "Port": 4648,
                   "Tags": {"region": "global", "dc": "dc1", "role": "nomad",
                            "build": "1.11.0", "bootstrap": "1"}, "Status": "alive"},
        "stats": {"nomad": {"leader": "true", "server": "true", "bootstrap": "true",
                            "known_regions": "1"},
                  "client": {"known_servers": "127.0.0.1:4647", "num_allocations": str(
                      len(server.client.runners))}},
    })


def _node_stub(node: dict[str, Any]) -> dict[str, Any]:
    return {"Address": "127.0.0.1", "ID": node["ID"], "Attributes": None,
            "Datacenter": node["Datacenter"], "Name": node["Name"], "NodeClass": "",
            "NodePool": node["NodePool"], "Version": "1.11.0", "Drain": node["Drain"],
            "SchedulingEligibility": node["SchedulingEligibility"], "Status": node["Status"],
            "StatusDescription": node["StatusDescription"], "Drivers": node["Drivers"],
            "HostVolumes": None, "NodeResources": None, "ReservedResources": None,
            "LastDrain": None, "CreateIndex": node["CreateIndex"],
            "ModifyIndex": node["ModifyIndex"]}


async def nodes_list(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("nodes"))
    prefix = request.query.get("prefix") or ""
    nodes = [_node_stub(n) for n in server.state.nodes.values() if n["ID"].startswith(prefix)]
    return json_response(request, nodes, index)


async def node_read(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("nodes"))
    node_id = request.match_info["id"]
    node = server.state.nodes.get(node_id) or next(
        (n for n in server.state.nodes.values() if n["ID"].startswith(node_id)
         and len(node_id) >= 8), None)
    if node is None:
        raise ApiError(404, "node not found")
    return json_response(request, node, index)


async def node_allocations(request: web.Request) -> web.Response:
    server = _server(request)
    index = await blocking(request, lambda: server.state.max_index("allocs"))
    return json_response(request, list(server.state.allocs.values()), index)


# ---- middleware and routing ------------------------------------------------------------
@web.middleware
async def nomad_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.Response(status=exc.status, text=exc.text, content_type="text/plain")
    except web.HTTPMethodNotAllowed:
        return web.Response(status=405, text="Invalid method", content_type="text/plain")
    except web.HTTPNotFound:
        return web.Response(status=404, text="404 page not found", content_type="text/plain")
    except web.HTTPRequestEntityTooLarge:
        return web.Response(status=413, text="http: request body too large",
                            content_type="text/plain")
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # never a traceback to the client; Nomad answers 500 + text
        import logging

        logging.getLogger("localnomad.http").exception("handler failed path=%s",
                                                       request.path)
        return web.Response(status=500, text=f"internal error: {type(exc).__name__}: {exc}",
                            content_type="text/plain")


WRITE = ("PUT", "POST")


def add_routes(app: web.Application) -> None:
    r = app.router

    def write(path: str, handler: Handler) -> None:
        for method in WRITE:
            r.add_route(method, path, handler)

    r.add_get("/v1/jobs", jobs_list)
    write("/v1/jobs", jobs_register)
    for method in ("GET", "PUT", "POST", "DELETE"):
        r.add_route(method, "/v1/job/{id}", job_handler)
    r.add_get("/v1/job/{id}/versions", job_versions)
    r.add_get("/v1/job/{id}/submission", job_submission)
    r.add_get("/v1/job/{id}/allocations", job_allocations)
    r.add_get("/v1/job/{id}/evaluations", job_evaluations)
    r.add_get("/v1/job/{id}/deployments", job_deployments)
    r.add_get("/v1/job/{id}/deployment", job_latest_deployment)
    r.add_get("/v1/job/{id}/summary", job_summary_handler)
    r.add_get("/v1/job/{id}/services", job_services)
    for method in ("GET", "PUT", "POST"):
        r.add_route(method, "/v1/job/{id}/scale", job_scale)
    write("/v1/job/{id}/plan", job_plan)
    write("/v1/job/{id}/revert", job_revert)
    write("/v1/job/{id}/stable", job_stable)
    write("/v1/job/{id}/evaluate", job_evaluate)
    write("/v1/validate/job", validate_job_handler)
    r.add_get("/v1/deployments", deployments_list)
    r.add_get("/v1/deployment/{id}", deployment_read)
    r.add_get("/v1/deployment/allocations/{id}", deployment_allocations)
    write("/v1/deployment/fail/{id}", deployment_fail)
    write("/v1/deployment/pause/{id}", deployment_pause)
    write("/v1/deployment/promote/{id}", deployment_promote)
    write("/v1/deployment/allocation-health/{id}", deployment_alloc_health)
    r.add_get("/v1/allocations", allocations_list)
    r.add_get("/v1/allocation/{id}", allocation_read)
    write("/v1/allocation/{id}/stop", allocation_stop)
    r.add_get("/v1/allocation/{id}/services", allocation_services)
    r.add_get("/v1/allocation/{id}/checks", allocation_checks)
    r.add_get("/v1/client/fs/logs/{id}", fs_logs)
    r.add_get("/v1/evaluations", evaluations_list)
    r.add_get("/v1/evaluation/{id}", evaluation_read)
    r.add_get("/v1/evaluation/{id}/allocations", evaluation_allocations)
    r.add_get("/v1/event/stream", event_stream)
    r.add_get("/v1/services", services_list)
    r.add_get("/v1/service/{name}", service_read)
    r.add_get("/v1/status/leader", status_leader)
    r.add_get("/v1/status/peers", status_peers)
    r.add_get("/v1/regions", regions)
    r.add_get("/v1/namespaces", namespaces)
    for method in ("GET", "PUT", "POST", "DELETE"):
        r.add_route(method, "/v1/namespace/{name}", namespace_handler)
    r.add_get("/v1/agent/self", agent_self)
    r.add_get("/v1/nodes", nodes_list)
    r.add_get("/v1/node/{id}", node_read)
    r.add_get("/v1/node/{id}/allocations", node_allocations)
