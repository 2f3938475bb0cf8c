"""The test-only control surface under `/_localnomad/` and the fault-injection middleware.

Nothing in Shaman's own code may call these routes: they exist so tests can drive the
simulated runtime (task behaviors, forced exits) and inject the failures a real Nomad
shows (5xx on a route, latency, cut event streams, a lost event buffer, a stuck
deployment watcher). docs/localnomad.md documents every route. A real Nomad has none
of this, so tests that use it are skipped there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from .http_api import SERVER_KEY, Handler, json_response
from .runtime_simulated import Behavior, SimulatedRuntime


@dataclass
class FaultRule:
    prefix: str
    fail_next: int = 0
    status: int = 503
    latency_ms: float = 0.0
    method: str | None = None

    def applies(self, request: web.Request) -> bool:
        return request.path.startswith(self.prefix) and (
            self.method is None or self.method.upper() == request.method)


FAULTS_KEY = web.AppKey("faults", list[FaultRule])


@web.middleware
async def fault_injection(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/_localnomad"):
        rules: list[FaultRule] = request.app[FAULTS_KEY]
        for rule in tuple(rules):
            if not rule.applies(request):
                continue
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
            if rule.fail_next > 0:
                rule.fail_next -= 1
                return web.Response(status=rule.status, content_type="text/plain",
                                    text="localnomad: injected fault")
    return await handler(request)


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
    body = {k.lower(): v for k, v in (await _body(request)).items()}
    rule = FaultRule(prefix=str(body.get("prefix") or "/v1/"),
                     fail_next=int(body.get("fail_next") or 0),
                     status=int(body.get("status") or 503),
                     latency_ms=float(body.get("latency_ms") or 0),
                     method=body.get("method"))
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
