"""Why a rollout failed, in words a developer can act on (pure, no I/O).

Input: the failures found in task events (failures.py), the allocation's check results
and the tail of its logs, all fetched by the caller. Output: one `AllocationFailure` per
failed allocation for the `rollout.failed` event, and a one-line reason for the deploy
record ("task app exited with code 1 (2 times)", "image could not be pulled: ...",
"health check app-http failing: HTTP 500 ...").

Every text that comes from the task goes through a `Redactor` (redact.py) before it is
clipped, so a cut never leaves part of a secret value: the app's secret values blanked
everywhere, credential shapes blanked in the app's own output. The default,
`SHAPES_ONLY`, knows no values.

It does not decide whether something failed (decide.py) and reads nothing itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.watcher.failures import Evidence, TaskFailure, unhealthy_reason
from services.watcher.nomad_model import Allocation, CheckResult
from services.watcher.redact import REDACTED, SHAPES_ONLY, Redactor, scrub
from shared.events.rollout import AllocationFailure

__all__ = [
    "REDACTED", "allocation_failure", "complete_lines", "describe_checks",
    "describe_evidence", "describe_failure", "failure_reason", "log_tail", "scrub",
]

MAX_EVENT_LINES = 10
MAX_LOG_LINES = 20
MAX_TEXT = 500


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _said(phrase: str, msg: str) -> str:
    return f"{phrase}: {msg}" if msg else phrase


def describe_failure(failure: TaskFailure, redactor: Redactor = SHAPES_ONLY) -> str:
    """One failure as a phrase: 'exited with code 1', 'image could not be pulled: ...'."""
    msg = _clip(redactor.nomad_text(failure.message), 300)
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


def _unhealthy(alloc: Allocation, redactor: Redactor) -> str:
    return redactor.nomad_text(unhealthy_reason(alloc) or "")


def describe_evidence(evidence: Evidence, redactor: Redactor = SHAPES_ONLY) -> str | None:
    """The strongest evidence as one phrase, or None when there is none."""
    unfixable = evidence.unfixable
    if unfixable is not None:
        return f"task {unfixable.task} {describe_failure(unfixable, redactor)}"
    top = evidence.most_frequent()
    if top is None:
        return None
    (group, task), count = top
    times = f" ({count} times)" if count > 1 else ""
    if task == "*":
        alloc = next(a for a in evidence.unhealthy_allocs if a.TaskGroup == group)
        return _said(f"allocations of group {group} unhealthy{times}",
                     _clip(_unhealthy(alloc, redactor), 300))
    latest = evidence.latest_for(group, task)
    assert latest is not None
    return f"task {task} {describe_failure(latest, redactor)}{times}"


def failing_checks(checks: Iterable[CheckResult]) -> list[CheckResult]:
    return [c for c in checks if c.Status == "failure"]


def _check_output(check: CheckResult, redactor: Redactor, limit: int) -> str:
    return _clip(redactor.app_output(check.Output), limit) if check.Output else ""


def describe_checks(
    checks: Iterable[CheckResult], redactor: Redactor = SHAPES_ONLY
) -> str | None:
    failing = failing_checks(checks)
    if not failing:
        return None
    check = failing[0]
    code = f"HTTP {check.StatusCode}" if check.StatusCode else ""
    name = check.Check or check.Service or "check"
    detail = ": ".join(p for p in (code, _check_output(check, redactor, 200)) if p)
    return _said(f"health check {name} failing", detail)


def complete_lines(text: str, read_bytes: int) -> str:
    """A log read from its end without its first line when the read may have cut it: the
    cut could fall inside a secret value, and a fragment cannot be recognised."""
    if read_bytes <= 0 or len(text.encode("utf-8", "replace")) < read_bytes:
        return text  # the whole log: nothing was cut
    _, newline, rest = text.partition("\n")
    return rest if newline else ""


def log_tail(
    text: str, lines: int = MAX_LOG_LINES, redactor: Redactor = SHAPES_ONLY
) -> list[str]:
    """The last `lines` non-empty lines of a log, redacted (before clipping: a clip must
    not cut a value in two) and clipped; one WITHHELD line when the app's words are out."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    if kept and redactor.withhold_app_output:
        return [redactor.app_output("")]
    return [_clip(redactor.app_output(line), 300) for line in kept[-lines:]]


def _event_lines(alloc: Allocation, task: str, redactor: Redactor) -> list[str]:
    state = alloc.tasks.get(task)
    if state is None:
        return []
    lines = []
    for e in state.events[-MAX_EVENT_LINES:]:
        text = _clip(redactor.nomad_text(e.text), 200) if e.text != e.Type else ""
        lines.append(_said(e.Type, text))
    return lines


def allocation_failure(
    alloc: Allocation,
    failures: Sequence[TaskFailure],
    checks: Sequence[CheckResult] = (),
    stderr: str = "",
    stdout: str = "",
    task: str | None = None,
    redactor: Redactor = SHAPES_ONLY,
) -> AllocationFailure:
    """Explain one allocation: its worst failure, task events, failing check and log tail."""
    worst = next((f for f in failures if f.unfixable), failures[-1] if failures else None)
    task_name = worst.task if worst else (task or next(iter(sorted(alloc.tasks)), ""))
    check_text = describe_checks(checks, redactor)
    if worst is not None:
        summary = describe_failure(worst, redactor)
    elif check_text is not None:
        summary = check_text
    else:
        summary = (_unhealthy(alloc, redactor)
                   or redactor.nomad_text(alloc.ClientDescription) or alloc.ClientStatus)
    failing = failing_checks(checks)
    tail = log_tail(stderr, redactor=redactor) or log_tail(stdout, redactor=redactor)
    return AllocationFailure(
        alloc_id=alloc.ID,
        task=task_name,
        summary=_clip(summary or "failed", 300),
        exit_code=worst.exit_code if worst is not None else None,
        task_events=_event_lines(alloc, task_name, redactor),
        check_output=_check_output(failing[0], redactor, 1000) if failing else None,
        log_tail=tail,
    )


def failure_reason(
    trigger: str,
    evidence: Evidence,
    allocations: Sequence[AllocationFailure],
    redactor: Redactor = SHAPES_ONLY,
) -> str:
    """The one-line reason recorded on the deploy: what was seen, then what triggered it.

    `trigger` is who decided ("failed early by Shaman", "Nomad: Failed due to progress
    deadline", ...). Task failures win over a failing check's output, which wins over
    Nomad's "unhealthy" and then the bare trigger: the more actionable comes first.
    `allocations` were explained with the same `redactor`.
    """
    cause = describe_evidence(evidence, redactor) if evidence.failures else None
    if cause is None:
        cause = next((a.summary for a in allocations if a.check_output), None)
    if cause is None:
        cause = describe_evidence(evidence, redactor)  # unhealthy, with Nomad's words
    if cause is None and allocations:
        cause = allocations[0].summary
    return f"{cause} ({trigger})" if cause else trigger
