"""Running one external command (git, buildah) with its output streamed line by line.

The command gets a session (process group) of its own, so stopping it stops everything
it started (buildah's RUN steps included): cancelling `run_streaming` sends SIGTERM to
the group, then SIGKILL after a short grace, and waits until the process is gone. The
child also asks the kernel to SIGKILL it if the builder dies (PR_SET_PDEATHSIG), so a
SIGKILLed builder leaves no build running behind it that could push later.

Not here: what the lines mean (services.builder.buildah) or where they go (logstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shared.logging import get_logger

log = get_logger(__name__)

KILL_GRACE_S = 1.0
_READ_CHUNK = 64 * 1024
MAX_LINE_CHARS = 4096  # longer lines (progress bars, minified output) are cut
_LINE_END = re.compile(r"[\r\n]")

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal, the group kill remains
    _prctl = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only async-signal-safe work belongs here.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class CommandNotFound(RuntimeError):
    """The program is not installed (e.g. buildah missing on this machine)."""


def _split_lines(buffer: str) -> tuple[list[str], str]:
    """Complete, non-empty lines (ended by \\n or \\r, as progress output uses) and the rest."""
    parts = _LINE_END.split(buffer)
    rest = parts.pop()
    return [part for part in parts if part], rest


async def run_streaming(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Run `argv`, call `on_line` for every output line (stdout and stderr), return the code.

    Cancellation stops the whole process group before it propagates.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(f"{argv[0]} is not installed on this builder") from exc
    assert proc.stdout is not None
    try:
        pending = ""
        while True:
            chunk = await proc.stdout.read(_READ_CHUNK)
            if not chunk:
                break
            pending += chunk.decode("utf-8", errors="replace")
            lines, pending = _split_lines(pending)
            for line in lines:
                on_line(line[:MAX_LINE_CHARS])
            if len(pending) > MAX_LINE_CHARS * 4:  # a line without end: emit what we have
                on_line(pending[:MAX_LINE_CHARS])
                pending = ""
        if pending.strip():
            on_line(pending[:MAX_LINE_CHARS])
        return await proc.wait()
    except BaseException:
        await asyncio.shield(_stop_group(proc))
        raise


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period, reap the child."""
    if proc.returncode is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # grandchildren may outlive the leader
        return
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    # SIGKILL the group even when the leader exited: its children may not have.
    _kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()
    log.info("command stopped", pid=proc.pid, returncode=proc.returncode)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
