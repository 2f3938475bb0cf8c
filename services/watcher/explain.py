"""Why a rollout failed, in words a developer can act on (pure, no I/O).

Input: the failures found in task events (failures.py), the allocation's check results
and the tail of its logs, all fetched by the caller. Output: one `AllocationFailure` per
failed allocation for the `rollout.failed` event, and a one-line reason for the deploy
record ("task app exited with code 1 (2 times)", "image could not be pulled: ...",
"health check app-http failing: HTTP 500 ...").

It does not decide whether something failed (decide.py) and reads nothing itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from services.watcher.failures import Evidence, TaskFailure, unhealthy_reason
from services.watcher.nomad_model import Allocation, CheckResult
from shared.events.rollout import AllocationFailure

MAX_EVENT_LINES = 10
MAX_LOG_LINES = 20
MAX_TEXT = 500


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_failure(failure: TaskFailure) -> str:
    """One failure as a phrase: 'exited with code 1', 'image could not be pulled: ...'."""
    msg = _clip(failure.message, 300)
    match failure.kind:
        case "exit":
            text = f"exited with code {failure.exit_code}"
            if failure.signal:
                text += f" (signal {failure.signal})"
            return text
        case "oom":
            return (f"was killed for using more memory than it is allowed "
                    f"(OOM killed, exit code {failure.exit_code})")
        case "image":
            return f"image could not be pulled: {msg}"
        case "exec_format":
            return ("could not execute its command: exec format error (the image was built "
                    "for another CPU architecture, or the entrypoint is not a binary)")
        case "template":
            return f"template could not be rendered: {msg}"
        case "secret":
            return f"secrets could not be read: {msg}"
        case "driver":
            return f"could not be started by the driver: {msg}"
        case "setup":
            return f"task setup failed: {msg}"
        case "validation":
            return f"task configuration is invalid: {msg}"
        case "artifact":
            return f"an artifact could not be downloaded: {msg}"
        case "unhealthy":
            return f"unhealthy: {msg}"
    return msg


def describe_evidence(evidence: Evidence) -> str | None:
    """The strongest evidence as one phrase, or None when there is none."""
    unfixable = evidence.unfixable
    if unfixable is not None:
        return f"task {unfixable.task} {describe_failure(unfixable)}"
    top = evidence.most_frequent()
    if top is None:
        return None
    (group, task), count = top
    times = f" ({count} times)" if count > 1 else ""
    if task == "*":
        alloc = next(a for a in evidence.unhealthy_allocs if a.TaskGroup == group)
        return f"allocations of group {group} unhealthy{times}: {unhealthy_reason(alloc)}"
    latest = evidence.latest_for(group, task)
    assert latest is not None
    return f"task {task} {describe_failure(latest)}{times}"


def failing_checks(checks: Iterable[CheckResult]) -> list[CheckResult]:
    return [c for c in checks if c.Status == "failure"]


def describe_checks(checks: Iterable[CheckResult]) -> str | None:
    failing = failing_checks(checks)
    if not failing:
        return None
    check = failing[0]
    code = f"HTTP {check.StatusCode}: " if check.StatusCode else ""
    name = check.Check or check.Service or "check"
    return f"health check {name} failing: {code}{_clip(check.Output, 200)}"


# An app that prints its own credentials would otherwise have them copied onto the
# timeline. The watcher never sees secret values, so it can only recognise their shape:
# `NAME=value` / `"name": value` for credential-like names, bearer tokens, URL passwords.
_CREDENTIAL = re.compile(
    r"""(?i)(\b[\w.-]*(?:token|passw(?:or)?d|secret|api[_-]?key|private[_-]?key|credential)"""
    r"""[\w.-]*["']?\s*[:=]\s*)("[^"]*"|'[^']*'|\S+)"""
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+@")
REDACTED = "[REDACTED]"


def scrub(line: str) -> str:
    """Blank what looks like a credential in one log line."""
    line = _CREDENTIAL.sub(lambda m: m.group(1) + REDACTED, line)
    line = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", line)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", line)


def log_tail(text: str, lines: int = MAX_LOG_LINES) -> list[str]:
    """The last `lines` non-empty lines of a log, scrubbed of credentials and clipped."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [_clip(scrub(line), 300) for line in kept[-lines:]]


def _event_lines(alloc: Allocation, task: str) -> list[str]:
    state = alloc.tasks.get(task)
    if state is None:
        return []
    return [f"{e.Type}: {_clip(e.text, 200)}" if e.text != e.Type else e.Type
            for e in state.events[-MAX_EVENT_LINES:]]


def allocation_failure(
    alloc: Allocation,
    failures: Sequence[TaskFailure],
    checks: Sequence[CheckResult] = (),
    stderr: str = "",
    stdout: str = "",
    task: str | None = None,
) -> AllocationFailure:
    """Explain one allocation: its worst failure, task events, failing check and log tail."""
    worst = next((f for f in failures if f.unfixable), failures[-1] if failures else None)
    task_name = worst.task if worst else (task or next(iter(sorted(alloc.tasks)), ""))
    check_text = describe_checks(checks)
    if worst is not None:
        summary = describe_failure(worst)
    elif check_text is not None:
        summary = check_text
    else:
        summary = unhealthy_reason(alloc) or alloc.ClientDescription or alloc.ClientStatus
    failing = failing_checks(checks)
    tail = log_tail(stderr) or log_tail(stdout)
    return AllocationFailure(
        alloc_id=alloc.ID,
        task=task_name,
        summary=_clip(summary or "failed", 300),
        exit_code=worst.exit_code if worst is not None else None,
        task_events=_event_lines(alloc, task_name),
        check_output=_clip(failing[0].Output, 1000) if failing else None,
        log_tail=tail,
    )


def failure_reason(
    trigger: str, evidence: Evidence, allocations: Sequence[AllocationFailure]
) -> str:
    """The one-line reason recorded on the deploy: what was seen, then what triggered it.

    `trigger` is who decided ("failed early by Shaman", "Nomad: Failed due to progress
    deadline", ...). Task failures win over a failing check's output, which wins over
    Nomad's "unhealthy" and then the bare trigger: the more actionable comes first.
    """
    cause = describe_evidence(evidence) if evidence.failures else None
    if cause is None:
        cause = next((a.summary for a in allocations if a.check_output), None)
    if cause is None:
        cause = describe_evidence(evidence)  # unhealthy, with Nomad's words for why
    if cause is None and allocations:
        cause = allocations[0].summary
    return f"{cause} ({trigger})" if cause else trigger
