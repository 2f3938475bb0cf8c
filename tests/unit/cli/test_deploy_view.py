"""What the deploy view prints, in a log (plain lines) and on a terminal (progress bars)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from cli.deploy_view import HumanView
from cli.output import Output

D = "d-0193f0a1c2e3aa"


def view(terminal: bool) -> tuple[HumanView, io.StringIO]:
    buffer = io.StringIO()
    out = Output(json_mode=False)
    out.console = Console(file=buffer, force_terminal=terminal, width=120, highlight=False)
    return HumanView(out), buffer


def ev(kind: str, deploy_id: str = D, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "app": "hello", "deploy_id": deploy_id, "time": "t", **fields}


def progress(healthy: int, deploy_id: str = D) -> dict[str, Any]:
    group = {"name": "web", "desired": 2, "placed": 2, "healthy": healthy, "unhealthy": 0}
    return ev("rollout.progress", deploy_id, release=2, groups=[group], percent=healthy * 50)


def test_plain_log_reads_in_order_without_repeats() -> None:
    shown, buffer = view(terminal=False)
    shown.status({"status": "pending"})
    shown.event(ev("build.started", builder="b1", attempt=1, source="upload"))
    shown.event(ev("build.log", lines=["STEP 1/2: FROM busybox", "STEP 2/2: COPY . /app"]))
    shown.status({"status": "building"})  # the record lagging behind the events: no repeat
    shown.event(ev("release.created", release=2, description="Deploy 3f2c1a9"))
    shown.event(progress(1))
    shown.event(progress(1))  # unchanged: no new line
    shown.event(progress(2))
    shown.event(ev("rollout.healthy", release=2))
    shown.event(ev("deploy.finished", status="healthy", release=2))  # the report's job
    shown.status({"status": "healthy"})
    shown.close()
    assert buffer.getvalue().splitlines() == [
        "==> queued",
        "==> building",
        "build started on b1 (attempt 1): upload",
        "  STEP 1/2: FROM busybox",
        "  STEP 2/2: COPY . /app",
        "==> rolling out",
        "release v2 created: Deploy 3f2c1a9",
        "rollout v2: web 1/2 healthy",
        "rollout v2: web 2/2 healthy",
        "rollout of v2 is healthy",
    ]


def test_failure_details_and_the_rollback_are_shown() -> None:
    shown, buffer = view(terminal=False)
    shown.event(ev("rollout.failed", release=2, reason="task app exited with code 1",
                   allocations=[{"alloc_id": "0c9b1e52-3f7e", "task": "app",
                                 "summary": "exited with code 1", "exit_code": 1,
                                 "log_tail": ["panic: DATABASE_URL is not set"]}]))
    shown.event(ev("rollback.started", release=2, to_release=1, automatic=True,
                   reason="task app exited with code 1"))
    shown.event(progress(1, deploy_id=f"{D}-rollback"))
    shown.event(ev("deploy.finished", f"{D}-rollback", status="healthy", release=3))
    text = buffer.getvalue()
    assert "rollout of v2 failed: task app exited with code 1" in text
    assert "allocation 0c9b1e52 task app: exited with code 1" in text
    assert "| panic: DATABASE_URL is not set" in text
    assert "automatic rollback to v1 started" in text
    assert "rollout v2 (rollback): web 1/2 healthy" in text
    assert "[rollback] deploy" in text  # the rollback deploy's own end is news


def test_terminal_draws_progress_bars_and_keeps_other_lines() -> None:
    shown, buffer = view(terminal=True)
    shown.event(ev("release.created", release=2, description="Deploy 3f2c1a9"))
    shown.event(progress(1))
    shown.event(ev("build.log", lines=["late line"]))
    shown.event(progress(2))
    shown.event(ev("rollout.healthy", release=2))
    shown.close()
    text = buffer.getvalue()
    assert "web v2" in text and "2/2" in text
    assert "late line" in text
    assert "rollout of v2 is healthy" in text
