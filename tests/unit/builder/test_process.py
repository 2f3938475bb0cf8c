"""Streaming a command's lines, and stopping its whole process group on cancel."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from services.builder.process import _split_lines, run_streaming


def test_split_lines_handles_cr_and_partial_lines() -> None:
    assert _split_lines("a\nb\r\nprogress 1\rprogress 2\rtail") == (
        ["a", "b", "progress 1", "progress 2"], "tail")


async def test_lines_and_exit_code() -> None:
    lines: list[str] = []
    code = await run_streaming(["sh", "-c", "echo one; echo two >&2; exit 3"], lines.append)
    assert code == 3 and lines == ["one", "two"]


async def test_cancel_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    lines: list[str] = []
    # A grandchild in the same group: only a group kill stops it.
    task = asyncio.create_task(run_streaming(
        ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; wait"], lines.append))
    deadline = asyncio.get_running_loop().time() + 10
    while "started" not in lines:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    grandchild = int(pidfile.read_text())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    while _alive(grandchild):
        assert asyncio.get_running_loop().time() < deadline, "grandchild survived"
        await asyncio.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"
