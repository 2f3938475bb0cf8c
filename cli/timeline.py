"""Timeline events (docs/events.md) in words: one short line each, plus failure details.

Events arrive as decoded JSON objects. The CLI reads them as plain dicts, leniently:
consumers must ignore unknown fields and unknown types (docs/events.md), and a CLI older
than the server must still print something useful, so nothing here raises on a field
that is missing or of another shape.

Pure functions; no I/O.
"""

from __future__ import annotations

import json
from typing import Any


def _get(event: dict[str, Any], key: str, default: Any = "") -> Any:
    value = event.get(key)
    return default if value is None else value


def _version(value: Any) -> str:
    return f"v{value}" if isinstance(value, int) else "?"


def describe(event: dict[str, Any]) -> str:
    """One line for an event (without its time and app; callers add those if they want)."""
    kind = str(event.get("type", ""))
    g = event.get
    match kind:
        case "deploy.requested":
            source = g("image") or (g("git") or {}).get("url", "")
            return f"deploy requested over NATS: {source}"
        case "deploy.accepted":
            by = f" by {g('requested_by')}" if g("requested_by") else ""
            return f"deploy {g('deploy_id')} accepted ({_get(event, 'kind')}: " \
                   f"{_get(event, 'source') or _get(event, 'description')}){by}"
        case "deploy.rejected":
            return f"deploy request rejected: {g('code')}: {g('message')}"
        case "deploy.superseded":
            return f"deploy {g('deploy_id')} superseded by {g('superseded_by')}"
        case "deploy.cancelled":
            return f"deploy {g('deploy_id')} cancelled: {_get(event, 'reason')}"
        case "deploy.finished":
            release = f" ({_version(g('release'))})" if g("release") is not None else ""
            took = g("duration_s")
            duration = f" in {took:.1f}s" if isinstance(took, int | float) else ""
            reason = f": {g('reason')}" if g("reason") else ""
            return f"deploy {g('deploy_id')} finished {g('status')}{release}{duration}{reason}"
        case "build.started":
            return f"build started on {_get(event, 'builder', '?')} " \
                   f"(attempt {_get(event, 'attempt', 1)}): {_get(event, 'source')}"
        case "build.log":
            lines = g("lines") or []
            return "\n".join(str(line) for line in lines)
        case "build.succeeded":
            cached = ", cached" if g("cached") else ""
            took = g("duration_s")
            duration = f"{took:.1f}s" if isinstance(took, int | float) else "?"
            return f"build succeeded: {_get(event, 'image')} ({duration}{cached})"
        case "build.failed":
            return f"build failed: {_get(event, 'reason')}"
        case "release.created":
            return f"release {_version(g('release'))} created: {_get(event, 'description')}" \
                   + (f" by {g('created_by')}" if g("created_by") else "")
        case "app.scaled":
            return f"scaled to {g('instances')} instances (from {g('previous')})" \
                   + (f" by {g('requested_by')}" if g("requested_by") else "")
        case "drift.detected":
            return f"drift detected: {_get(event, 'description')}"
        case "rollout.submitted":
            version = g("job_version")
            job = f"job version {version}, " if version is not None else ""
            return f"rollout of {_version(g('release'))} submitted ({job}{_get(event, 'outcome')})"
        case "rollout.progress":
            groups = ", ".join(group_summary(group) for group in (g("groups") or []))
            return f"rollout of {_version(g('release'))}: {groups or 'no groups'} " \
                   f"({_get(event, 'percent', 0)}%)"
        case "rollout.healthy":
            return f"rollout of {_version(g('release'))} is healthy"
        case "rollout.failed":
            return f"rollout of {_version(g('release'))} failed: {_get(event, 'reason')}"
        case "rollback.started":
            how = "automatic " if g("automatic") else ""
            return f"{how}rollback to {_version(g('to_release'))} started: " \
                   f"{_get(event, 'reason')}"
        case "rollback.succeeded":
            return f"rolled back to {_version(g('to_release'))} " \
                   f"(as release {_version(g('new_release'))})"
        case "rollback.failed":
            return f"rollback to {_version(g('to_release'))} failed: {_get(event, 'reason')}"
        case _:
            rest = {k: v for k, v in event.items() if k not in ("type", "app", "time")}
            return f"{kind or 'event'} {json.dumps(rest, sort_keys=True, default=str)}"


def group_summary(group: dict[str, Any]) -> str:
    desired = group.get("desired", 0)
    text = f"{group.get('name', '?')} {group.get('healthy', 0)}/{desired} healthy"
    if group.get("unhealthy"):
        text += f", {group['unhealthy']} unhealthy"
    if group.get("canaries"):
        promoted = " promoted" if group.get("promoted") else ""
        text += f", {group['canaries']} canaries{promoted}"
    return text


def failure_details(event: dict[str, Any]) -> list[str]:
    """The why of a failed rollout or build, indented, for a person to act on."""
    lines: list[str] = []
    if event.get("type") == "build.failed":
        if event.get("step"):
            lines.append(f"  step: {event['step']}")
        lines.extend(f"  | {line}" for line in event.get("log_tail") or [])
        return lines
    for allocation in event.get("allocations") or []:
        if not isinstance(allocation, dict):
            continue
        alloc_id = str(allocation.get("alloc_id") or "")[:8]
        task = allocation.get("task") or "?"
        lines.append(f"  allocation {alloc_id} task {task}: {allocation.get('summary') or ''}")
        if allocation.get("exit_code") is not None:
            lines.append(f"    exit code: {allocation['exit_code']}")
        if allocation.get("check_output"):
            lines.append(f"    health check: {allocation['check_output']}")
        task_events = allocation.get("task_events") or []
        if task_events:
            lines.append("    task events:")
            lines.extend(f"      {entry}" for entry in task_events[-6:])
        log_tail = allocation.get("log_tail") or []
        if log_tail:
            lines.append("    log tail:")
            lines.extend(f"      | {line}" for line in log_tail[-12:])
    return lines


def event_line(event: dict[str, Any], with_app: bool = True) -> str:
    """`TIME APP TYPE description` for `shaman events`."""
    time = str(event.get("time", ""))
    app = f" {event.get('app', '')}" if with_app else ""
    return f"{time}{app} {event.get('type', '?')}: {describe(event)}"
