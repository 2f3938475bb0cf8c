"""The test-only control surface under `/_localnomad/`.

Nothing in Shaman's own code may call these routes: they exist so tests can drive the
simulated runtime (task behaviors, forced exits) and inject the failures a real Nomad
shows (5xx on a route, latency, cut event streams, a lost event buffer, a stuck
deployment watcher, answers held past the client's timeout). The fault rules and their
middleware are in faults.py. docs/localnomad.md documents every route. A real Nomad has none
of this, so tests that use it are skipped there.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .faults import FAULTS_KEY, FaultRuleError, parse_rule
from .http_api import SERVER_KEY, json_response
from .runtime_simulated import Behavior, SimulatedRuntime


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


def _simulated(request: web.Request) -> SimulatedRuntime:
    runtime = request.app[SERVER_KEY].runtime
    if not isinstance(runtime, SimulatedRuntime):
        raise web.HTTPConflict(text="task behaviors need --runtime simulated")
    return runtime


async def add_behavior(request: web.Request) -> web.Response:
    runtime = _simulated(request)
    try:
        behavior = Behavior.from_json(await _body(request))
    except TypeError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    runtime.add_behavior(behavior)
    return json_response(request, {"Behaviors": len(runtime.behaviors)})


async def clear_behaviors(request: web.Request) -> web.Response:
    _simulated(request).clear_behaviors()
    return json_response(request, {"Behaviors": 0})


async def exit_alloc(request: web.Request) -> web.Response:
    runtime = _simulated(request)
    body = await _body(request)
    n = runtime.exit_task(request.match_info["id"], body.get("task"), int(body.get("code", 0)))
    return json_response(request, {"Exited": n})


async def add_fault(request: web.Request) -> web.Response:
    try:
        rule = parse_rule(await _body(request))
    except FaultRuleError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    request.app[FAULTS_KEY].append(rule)
    return json_response(request, {"Faults": len(request.app[FAULTS_KEY])})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].clear()
    return json_response(request, {"Faults": 0})


async def cut_streams(request: web.Request) -> web.Response:
    request.app[SERVER_KEY].broker.cut_connections()
    return json_response(request, {"Cut": True})


async def drop_buffer(request: web.Request) -> web.Response:
    request.app[SERVER_KEY].broker.drop_buffer()
    return json_response(request, {"Dropped": True})


async def watcher(request: web.Request) -> web.Response:
    body = {k.lower(): v for k, v in (await _body(request)).items()}
    server = request.app[SERVER_KEY]
    server.watcher.paused_watcher = bool(body.get("paused"))
    if not server.watcher.paused_watcher:
        for dep_id in list(server.state.deployments):
            server.watcher.kick(dep_id)
    return json_response(request, {"Paused": server.watcher.paused_watcher})


async def info(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return json_response(request, {
        "Runtime": server.runtime.name, "Index": server.state.index,
        "DataDir": str(server.settings.data_dir), "Runners": len(server.client.runners),
        "EventBuffer": len(server.broker.buffer)})


def add_control_routes(app: web.Application) -> None:
    app[FAULTS_KEY] = []
    r = app.router
    r.add_post("/_localnomad/behaviors", add_behavior)
    r.add_delete("/_localnomad/behaviors", clear_behaviors)
    r.add_post("/_localnomad/allocs/{id}/exit", exit_alloc)
    r.add_post("/_localnomad/faults", add_fault)
    r.add_delete("/_localnomad/faults", clear_faults)
    r.add_post("/_localnomad/events/cut", cut_streams)
    r.add_post("/_localnomad/events/drop-buffer", drop_buffer)
    r.add_post("/_localnomad/watcher", watcher)
    r.add_get("/_localnomad/info", info)
