"""Fault rules for localnomad's `/v1/` routes: their two forms, their parsing, the middleware.

Two forms, told apart by whether the body names an exact `path`:

- a **prefix rule** (`prefix`, `method`, `fail_next`, `status`, `latency_ms`) acts *before*
  the handler: it delays every matching request, and answers the next N with an error
  without running them (the write never happens);
- a **hold rule** (`path`, `method`, `respond_after_ms`, `drop`, `times`) acts *after* the
  handler: the request runs normally (a write commits, its events go out), then its answer
  is held for `respond_after_ms` and sent, or with `drop` the connection is aborted instead.
  A client whose timeout is shorter sees a write with an unknown outcome, which is what a
  slow Nomad leader does to its callers. The path is matched exactly, so a register
  (`POST /v1/job/web`) is not its plan (`POST /v1/job/web/plan`).

Prefix rules run first, in the order they were added; then the first hold rule that matches
and has uses left holds the answer. Streamed answers (the event stream, followed logs) are
written by their handler, so holding them holds nothing but the end of the request.

This module is not the control routes that add and clear rules (control.py) and has no
Nomad semantics; a real Nomad has none of it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .http_api import Handler

CONTROL_PREFIX = "/_localnomad"


class FaultRuleError(ValueError):
    """A rule body that cannot be used; the text names the field and what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"fault rule: field {field!r}: {problem}")
        self.field = field


@dataclass
class FaultRule:
    """A prefix rule: delay, and fail the next `fail_next` requests without running them."""

    prefix: str
    fail_next: int = 0
    status: int = 503
    latency_ms: float = 0.0
    method: str | None = None

    def applies(self, request: web.Request) -> bool:
        return request.path.startswith(self.prefix) and (
            self.method is None or self.method.upper() == request.method)


@dataclass
class HoldRule:
    """A hold rule: run the request, then hold (and maybe drop) its answer.

    `times` is how many more requests it holds; None means every matching request while
    the rule exists.
    """

    path: str
    respond_after_ms: float
    method: str | None = None
    drop: bool = False
    times: int | None = None

    def take(self, request: web.Request) -> bool:
        """Whether this request is held by this rule; uses one of `times` if so."""
        if request.path != self.path:
            return False
        if self.method is not None and self.method.upper() != request.method:
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


Rule = FaultRule | HoldRule
FAULTS_KEY = web.AppKey("faults", list[Rule])

_COMMON = {"method"}
_PREFIX_FIELDS = {"prefix", "fail_next", "status", "latency_ms"}
_HOLD_FIELDS = {"path", "respond_after_ms", "drop", "times"}


def _path(body: dict[str, Any], field: str) -> str:
    value = body[field]
    if not isinstance(value, str) or not value.startswith("/"):
        raise FaultRuleError(field, f"must be a path starting with '/', got {value!r}")
    if value.startswith(CONTROL_PREFIX):
        raise FaultRuleError(field, f"{CONTROL_PREFIX}/ routes are never faulted")
    return value


def _int(body: dict[str, Any], field: str, low: int, high: int | None = None) -> int:
    value = body[field]
    # bool is an int in Python, never what a caller meant by a count or a status.
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise FaultRuleError(field, f"must be an integer {bounds}, got {value!r}")
    return value


def _ms(body: dict[str, Any], field: str) -> float:
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultRuleError(field, f"must be a number of milliseconds >= 0, got {value!r}")
    return float(value)


def _bool(body: dict[str, Any], field: str) -> bool:
    value = body[field]
    if not isinstance(value, bool):
        raise FaultRuleError(field, f"must be true or false, got {value!r}")
    return value


def parse_rule(raw: dict[str, Any]) -> Rule:
    """The rule a `POST /_localnomad/faults` body describes (keys case-insensitive).

    A null value counts as absent, as it always has for prefix rules. Raises
    FaultRuleError for an unknown field, a field of the other form, or a bad value.
    """
    body = {str(k).lower(): v for k, v in raw.items() if v is not None}
    known = _COMMON | _PREFIX_FIELDS | _HOLD_FIELDS
    unknown = sorted(body.keys() - known)
    if unknown:
        # Rejected rather than ignored: a misspelt knob would otherwise add a rule that
        # silently does nothing, and the scenario relying on it would test nothing.
        raise FaultRuleError(unknown[0], f"unknown field (known: {', '.join(sorted(known))})")
    method = None
    if "method" in body:
        value = body["method"]
        if not isinstance(value, str) or not value.isalpha():
            raise FaultRuleError("method", f"must be an HTTP method such as 'POST', "
                                           f"got {value!r}")
        method = value.upper()
    if "path" in body:
        mixed = sorted(body.keys() & _PREFIX_FIELDS)
        if mixed:
            raise FaultRuleError(mixed[0], "belongs to prefix rules, not to a rule with "
                                           "'path' (a hold rule runs the request and holds "
                                           "its answer)")
        if "respond_after_ms" not in body:
            raise FaultRuleError("respond_after_ms", "required with 'path'")
        return HoldRule(path=_path(body, "path"),
                        respond_after_ms=_ms(body, "respond_after_ms"), method=method,
                        drop=_bool(body, "drop") if "drop" in body else False,
                        times=_int(body, "times", 1) if "times" in body else None)
    orphans = sorted(body.keys() & _HOLD_FIELDS)
    if orphans:
        raise FaultRuleError(orphans[0], "needs 'path' (the exact path whose answer is held)")
    return FaultRule(prefix=_path(body, "prefix") if "prefix" in body else "/v1/",
                     fail_next=_int(body, "fail_next", 0) if "fail_next" in body else 0,
                     status=_int(body, "status", 100, 599) if "status" in body else 503,
                     latency_ms=_ms(body, "latency_ms") if "latency_ms" in body else 0.0,
                     method=method)


async def _hold(request: web.Request, rule: HoldRule) -> None:
    await asyncio.sleep(rule.respond_after_ms / 1000)
    if rule.drop and request.transport is not None:
        # An abort (RST), not a close: the client sees its connection reset, as when a
        # proxy or the server dies between committing and answering. aiohttp then fails
        # to write the answer and drops it quietly.
        request.transport.abort()


@web.middleware
async def fault_injection(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    rules: list[Rule] = request.app[FAULTS_KEY]
    for rule in tuple(rules):
        if not isinstance(rule, FaultRule) or not rule.applies(request):
            continue
        if rule.latency_ms:
            await asyncio.sleep(rule.latency_ms / 1000)
        if rule.fail_next > 0:
            rule.fail_next -= 1
            return web.Response(status=rule.status, content_type="text/plain",
                                text="localnomad: injected fault")
    # Chosen before the handler runs, so a rule added meanwhile does not hold this answer.
    hold = next((r for r in tuple(rules) if isinstance(r, HoldRule) and r.take(request)),
                None)
    if hold is None:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException:
        await _hold(request, hold)
        raise
    await _hold(request, hold)
    return response
