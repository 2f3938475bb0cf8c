"""Why a rollout failed, in words a developer can act on (pure, no I/O).

Input: the failures found in task events (failures.py), the allocation's check results
and the tail of its logs, all fetched by the caller. Output: one `AllocationFailure` per
failed allocation for the `rollout.failed` event, and a one-line reason for the deploy
record ("task app exited with code 1 (2 times)", "image could not be pulled: ...",
"health check app-http failing: HTTP 500 ...").

Every text that comes from the task (its log lines and check output, and Nomad's words
about it: task event texts, which can quote the app's command or environment) has what
looks like a credential blanked (`scrub`) before it is clipped, so a cut never leaves a
fragment that no longer looks like one. Only shapes are recognised: the watcher does not
read the app's secret values (platform components must not be able to), so a value
printed bare, with no credential-like name around it, goes out as it is (docs/watcher.md).

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
REDACTED = "[REDACTED]"

# An app that prints its own credentials would otherwise have them copied onto the
# timeline. The watcher never sees secret values, so it can only recognise their shape:
# `NAME=value` / `"name": value` for credential-like names, bearer tokens, URL passwords.
_CREDENTIAL = re.compile(
    r"""(?i)(\b[\w.-]*(?:token|passw(?:or)?d|secret|api[_-]?key|private[_-]?key|credential)"""
    r"""[\w.-]*["']?\s*[:=]\s*)("[^"]*"|'[^']*'|\S+)"""
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+@")


def scrub(line: str) -> str:
    """Blank what looks like a credential in one line of text from the task."""
    line = _CREDENTIAL.sub(lambda m: m.group(1) + REDACTED, line)
    line = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", line)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", line)


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _task_text(text: str, limit: int) -> str:
    """Text from the task, scrubbed then clipped: a clip must not cut a credential so that
    what is left no longer looks like one."""
    return _clip(scrub(text), limit)


def _said(phrase: str, msg: str) -> str:
    return f"{phrase}: {msg}" if msg else phrase


def describe_failure(failure: TaskFailure) -> str:
    """One failure as a phrase: 'exited with code 1', 'image could not be pulled: ...'."""
    msg = _task_text(failure.message, 300)
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
            return _said("image could not be pulled", msg)
        case "exec_format":
            return ("could not execute its command: exec format error (the image was built "
                    "for another CPU architecture, or the entrypoint is not a binary)")
        case "template":
            return _said("template could not be rendered", msg)
        case "secret":
            return _said("secrets could not be read", msg)
        case "driver":
            return _said("could not be started by the driver", msg)
        case "setup":
            return _said("task setup failed", msg)
        case "validation":
            return _said("task configuration is invalid", msg)
        case "artifact":
            return _said("an artifact could not be downloaded", msg)
        case "unhealthy":
            return _said("unhealthy", msg)
    return msg or failure.kind


def _unhealthy(alloc: Allocation) -> str:
    return _task_text(unhealthy_reason(alloc) or "", 300)


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
        return _said(f"allocations of group {group} unhealthy{times}", _unhealthy(alloc))
    latest = evidence.latest_for(group, task)
    assert latest is not None
    return f"task {task} {describe_failure(latest)}{times}"


def failing_checks(checks: Iterable[CheckResult]) -> list[CheckResult]:
    return [c for c in checks if c.Status == "failure"]


def _check_output(check: CheckResult, limit: int) -> str:
    return _task_text(check.Output, limit) if check.Output else ""


def describe_checks(checks: Iterable[CheckResult]) -> str | None:
    failing = failing_checks(checks)
    if not failing:
        return None
    check = failing[0]
    code = f"HTTP {check.StatusCode}" if check.StatusCode else ""
    name = check.Check or check.Service or "check"
    detail = ": ".join(p for p in (code, _check_output(check, 200)) if p)
    return _said(f"health check {name} failing", detail)


def complete_lines(text: str, read_bytes: int) -> str:
    """A log read from its end without its first line when the read may have cut it: the
    cut could fall inside a credential (`…WORD=hunter2` is no longer `PASSWORD=hunter2`),
    and a fragment cannot be recognised."""
    if read_bytes <= 0 or len(text.encode("utf-8", "replace")) < read_bytes:
        return text  # the whole log: nothing was cut
    _, newline, rest = text.partition("\n")
    return rest if newline else ""


def log_tail(text: str, lines: int = MAX_LOG_LINES) -> list[str]:
    """The last `lines` non-empty lines of a log, scrubbed of credentials and clipped."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [_task_text(line, 300) for line in kept[-lines:]]


def _event_lines(alloc: Allocation, task: str) -> list[str]:
    state = alloc.tasks.get(task)
    if state is None:
        return []
    return [_said(e.Type, _task_text(e.text, 200) if e.text != e.Type else "")
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
        summary = (_unhealthy(alloc)
                   or _task_text(alloc.ClientDescription, 300) or alloc.ClientStatus)
    failing = failing_checks(checks)
    tail = log_tail(stderr) or log_tail(stdout)
    return AllocationFailure(
        alloc_id=alloc.ID,
        task=task_name,
        summary=_clip(summary or "failed", 300),
        exit_code=worst.exit_code if worst is not None else None,
        task_events=_event_lines(alloc, task_name),
        check_output=_check_output(failing[0], 1000) if failing else None,
        log_tail=tail,
    )


def failure_reason(
    trigger: str, evidence: Evidence, allocations: Sequence[AllocationFailure]
) -> str:
    """The one-line reason recorded on the deploy: what was seen, then what triggered it.

    `trigger` is who decided ("failed early by Shaman", "Nomad: Failed due to progress
    deadline", ...). Task failures win over a failing check's output, which wins over
    Nomad's "unhealthy" and then the bare trigger: the more actionable comes first. Every
    piece of task text in it was scrubbed where it was described.
    """
    cause = describe_evidence(evidence) if evidence.failures else None
    if cause is None:
        cause = next((a.summary for a in allocations if a.check_output), None)
    if cause is None:
        cause = describe_evidence(evidence)  # unhealthy, with Nomad's words for why
    if cause is None and allocations:
        cause = allocations[0].summary
    return f"{cause} ({trigger})" if cause else trigger
