"""Resident memory of processes, read from /proc/<pid>/status (VmRSS).

- `rss_mb(pid)`: one reading;
- `RssSampler`: a thread that reads a set of processes every `interval_s` and keeps the
  peak of each, for "RSS under load";
- `bare_python_rss_mb(imports)`: the floor: a bare interpreter that imported the same
  libraries a service imports and does nothing else.

Not here: finding the processes (the devstack's pid files do that: `Stack.component(name)
.pid()`).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

#: What every service imports before doing anything of its own (its floor's imports).
SERVICE_IMPORTS = ("aiohttp", "nats", "msgspec", "pydantic", "pydantic_settings", "structlog",
                   "prometheus_client", "nomad", "hvac", "tenacity")


def rss_mb(pid: int) -> float | None:
    """VmRSS in MiB, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


class RssSampler:
    """Peak RSS of named processes while it runs (`with RssSampler(pids) as s: ...`)."""

    def __init__(self, pids: Mapping[str, int], interval_s: float = 0.1) -> None:
        self.pids = dict(pids)
        self.interval_s = interval_s
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                value = rss_mb(pid)
                if value is not None and value > self.peak.get(name, 0.0):
                    self.peak[name] = value
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def bare_python_rss_mb(imports: tuple[str, ...] = SERVICE_IMPORTS) -> float | None:
    """RSS of an interpreter that imported `imports` and waits (the services' floor)."""
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in imports)
        + "print('ready', flush=True)\nsys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            return None
        time.sleep(0.2)  # let the allocator settle after the imports
        return rss_mb(proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
