"""What went wrong in an allocation, read from its task events (pure, no I/O).

Nomad keeps the last ten events per task. From them this module extracts each failure
(an exit, an OOM kill, an image that cannot be pulled, a template or secret that cannot
be rendered, ...), says whether a restart could ever fix it, and counts how often the
same task failed. The watcher's fail-fast rule and the failure explanation are built on
these facts; the wording of an explanation lives in explain.py.

A `Terminated` event that follows a `Killing` is Nomad stopping the task on purpose (a
newer version, a failed deployment) and is not a failure of the release.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from services.watcher.nomad_model import Allocation, TaskEvent

FailureKind = Literal[
    "exit", "oom", "image", "exec_format", "template", "secret", "driver", "setup",
    "validation", "artifact", "unhealthy",
]

# Failures no restart can fix: the same bytes will fail the same way.
UNFIXABLE: frozenset[str] = frozenset({"image", "exec_format", "template", "secret", "validation"})

_IMAGE = re.compile(
    r"image not found|manifest unknown|not found: manifest|no such image|"
    r"failed to pull|pull access denied|error pulling|failed pulling|unable to pull|"
    r"image pull|pulling image|repository does not exist|unauthorized|"
    r"name unknown|invalid reference format|requested access to the resource is denied",
    re.I,
)
_EXEC_FORMAT = re.compile(r"exec format error", re.I)
_SECRET = re.compile(r"vault|secret|permission denied.*kv|missing key|no secret", re.I)
_TEMPLATE = re.compile(r"template", re.I)


@dataclass(frozen=True)
class TaskFailure:
    alloc_id: str
    group: str
    task: str
    kind: FailureKind
    message: str  # Nomad's own words, for the explanation
    time_ns: int
    exit_code: int | None = None
    signal: int = 0

    @property
    def unfixable(self) -> bool:
        return self.kind in UNFIXABLE


def _classify_start_failure(event: TaskEvent, default: FailureKind) -> FailureKind:
    text = event.text
    if _EXEC_FORMAT.search(text):
        return "exec_format"
    if _IMAGE.search(text):
        return "image"
    if _TEMPLATE.search(text) or (event.SetupError and _TEMPLATE.search(event.SetupError)):
        return "secret" if _SECRET.search(text) else "template"
    if event.VaultError or (_SECRET.search(text) and default == "setup"):
        return "secret"
    return default


def task_failures(alloc: Allocation, since_ns: int = 0) -> list[TaskFailure]:
    """Every failure of every task in `alloc` at or after `since_ns`, oldest first."""
    found: list[TaskFailure] = []
    for task, state in sorted(alloc.tasks.items()):
        stopping = False  # Nomad asked the task to stop: its exit is not a failure
        for event in state.events:
            kind: FailureKind | None = None
            exit_code: int | None = None
            etype = event.Type
            if etype == "Started":
                stopping = False
            elif etype == "Killing":
                if event.FailsTask:  # e.g. "Template failed: ..."
                    kind = _classify_start_failure(event, "setup")
                else:
                    stopping = True
            elif etype in ("Sibling Task Failed", "Leader Task Dead"):
                stopping = True
            elif etype == "Terminated":
                if not stopping:
                    exit_code = event.ExitCode
                    if event.oom_killed:
                        kind = "oom"
                    elif _EXEC_FORMAT.search(event.text):
                        kind = "exec_format"
                    else:
                        kind = "exit"
            elif etype == "Driver Failure":
                kind = _classify_start_failure(event, "driver")
            elif etype == "Setup Failure":
                kind = _classify_start_failure(event, "setup")
            elif etype == "Failed Validation":
                kind = "validation"
            elif etype == "Failed Artifact Download":
                kind = "artifact"
            if kind is None or event.Time < since_ns:
                continue
            found.append(TaskFailure(
                alloc_id=alloc.ID, group=alloc.TaskGroup, task=task, kind=kind,
                message=event.text, time_ns=event.Time, exit_code=exit_code,
                signal=event.Signal,
            ))
    return found


def unhealthy_reason(alloc: Allocation) -> str | None:
    """Why Nomad marked the allocation unhealthy (the `Alloc Unhealthy` event), if it did."""
    for state in alloc.tasks.values():
        for event in reversed(state.events):
            if event.Type == "Alloc Unhealthy":
                return event.text
    if alloc.healthy is False:
        return alloc.ClientDescription or "allocation unhealthy"
    return None


@dataclass(frozen=True)
class Evidence:
    """Failures of one release's allocations, as counted for the fail-fast rule."""

    failures: list[TaskFailure]
    unhealthy_allocs: list[Allocation]  # unhealthy with no task failure to show for it

    @property
    def unfixable(self) -> TaskFailure | None:
        for failure in self.failures:
            if failure.unfixable:
                return failure
        return None

    def most_frequent(self) -> tuple[tuple[str, str], int] | None:
        """((group, task), count) of the task that failed most often."""
        counts = Counter((f.group, f.task) for f in self.failures)
        for alloc in self.unhealthy_allocs:
            counts[(alloc.TaskGroup, "*")] += 1
        if not counts:
            return None
        return counts.most_common(1)[0]

    def latest_for(self, group: str, task: str) -> TaskFailure | None:
        matching = [f for f in self.failures if f.group == group and f.task == task]
        return max(matching, key=lambda f: f.time_ns) if matching else None


def gather_evidence(
    allocs: Iterable[Allocation], *, since_ns: int = 0, skip_healthy: bool = True
) -> Evidence:
    """Collect failures of `allocs`.

    With `skip_healthy`, allocations Nomad already counts as healthy are left out: a task
    that failed once and then came up healthy is not evidence of a bad release.
    """
    failures: list[TaskFailure] = []
    unhealthy: list[Allocation] = []
    for alloc in allocs:
        if skip_healthy and alloc.healthy is True:
            continue
        mine = task_failures(alloc, since_ns)
        failures.extend(mine)
        if not mine and alloc.healthy is False:
            unhealthy.append(alloc)
    failures.sort(key=lambda f: f.time_ns)
    return Evidence(failures=failures, unhealthy_allocs=unhealthy)
