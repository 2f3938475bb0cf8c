"""What a person sees while a deploy runs: status changes, the build log, rollout bars.

On a terminal the rollout is a rich progress bar per task group (healthy of desired), with
every other line printed above the bars; elsewhere (CI logs, pipes, the e2e tests) each
change of a group's progress is one plain line, so logs stay readable. In JSON mode the
view is silent on stdout (`QuietView`): the command prints one document at the end.
"""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from cli.output import Output
from cli.timeline import describe, failure_details, group_summary

PHASES = {"pending": 0, "building": 1, "deploying": 2}
PHASE_WORDS = {"pending": "queued", "building": "building", "deploying": "rolling out"}
#: The phase an event shows the deploy has reached (the record, polled, may lag behind).
EVENT_PHASES = {
    "build.started": "building", "build.log": "building", "build.succeeded": "building",
    "release.created": "deploying", "rollout.submitted": "deploying",
    "rollout.progress": "deploying",
}


class HumanView:
    def __init__(self, out: Output) -> None:
        self.out = out
        self.console = out.console
        self._progress: Progress | None = None
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._last_plain: dict[tuple[str, str], str] = {}
        self._phase = -1

    # -- DeployView ------------------------------------------------------------------

    def status(self, deploy: dict[str, Any]) -> None:
        # Outcomes are the final report's to print; only the way there is shown here.
        self._enter(str(deploy.get("status")))

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        rollback = str(event.get("deploy_id", "")).endswith("-rollback")
        if kind == "deploy.finished" and not rollback:
            return  # the final report says it, with the reason
        if not rollback:
            self._enter(EVENT_PHASES.get(str(kind), ""))
        if kind == "build.log":
            for line in event.get("lines") or []:
                self._line(f"  {line}", style=None)
            return
        if kind == "rollout.progress":
            self._progress_event(event, rollback)
            return
        if kind in ("rollout.healthy", "rollout.failed"):
            self._stop_progress()
        style = "red" if kind in ("build.failed", "rollout.failed", "rollback.failed") else None
        prefix = "[rollback] " if rollback and not str(kind).startswith("rollback.") else ""
        self._line(prefix + describe(event), style=style)
        if kind in ("build.failed", "rollout.failed"):
            for line in failure_details(event):
                self._line(line, style=None)

    def warning(self, message: str) -> None:
        self.out.note(f"warning: {message}", style="yellow")

    def close(self) -> None:
        self._stop_progress()

    # -- internals ---------------------------------------------------------------------

    def _enter(self, status: str) -> None:
        """Announce a phase once, in order, whichever source (record or event) saw it first."""
        phase = PHASES.get(status)
        if phase is None or phase <= self._phase:
            return
        self._phase = phase
        self._line(f"==> {PHASE_WORDS[status]}", style="bold")

    def _line(self, text: str, style: str | None) -> None:
        target = self._progress.console if self._progress is not None else self.console
        target.print(text, style=style, markup=False, highlight=False)

    def _progress_event(self, event: dict[str, Any], rollback: bool) -> None:
        release = event.get("release")
        suffix = f" v{release}" if isinstance(release, int) else ""
        if rollback:
            suffix += " (rollback)"
        for group in event.get("groups") or []:
            if not isinstance(group, dict):
                continue
            key = (str(event.get("deploy_id", "")), str(group.get("name", "?")))
            if not self.console.is_terminal:
                line = f"rollout{suffix}: {group_summary(group)}"
                if self._last_plain.get(key) != line:
                    self._last_plain[key] = line
                    self.console.print(line, markup=False, highlight=False)
                continue
            progress = self._ensure_progress()
            desired = max(int(group.get("desired") or 0), 1)
            healthy = int(group.get("healthy") or 0)
            detail = f"{group.get('placed', 0)} placed"
            if group.get("unhealthy"):
                detail += f", {group['unhealthy']} unhealthy"
            if key not in self._tasks:
                self._tasks[key] = progress.add_task(
                    f"{key[1]}{suffix}", total=desired, detail=detail
                )
            progress.update(self._tasks[key], total=desired, completed=healthy, detail=detail)

    def _ensure_progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("healthy  {task.fields[detail]}"),
                console=self.console,
            )
            self._progress.start()
        return self._progress

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


class QuietView:
    """For --json: nothing on stdout while waiting (the result is one document at the end)."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def status(self, deploy: dict[str, Any]) -> None:
        return None

    def event(self, event: dict[str, Any]) -> None:
        return None

    def warning(self, message: str) -> None:
        self.out.note(f"warning: {message}", style="yellow")

    def close(self) -> None:
        return None
