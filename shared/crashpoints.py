"""Named crash points for kill -9 fault tests (reliability.md §7, scenarios 5 and 6).

A service lists the points its code can reach (its `KNOWN` set) and passes
`Crashpoints(KNOWN, armed)` to the code that owns each point; `reach(name)` ends the
process on the spot with exit code 137 (what a SIGKILL looks like to a supervisor)
when `name` is the armed one, and does nothing otherwise. Nothing is flushed, acked or
drained: that is the point. Only the one line on stderr is written first, so a test
log shows which point ended the process. Armed only through SHAMAN_CRASHPOINT
(`CommonSettings.crashpoint`); empty (the default) in every real deployment.

This is the mechanism only. Where the points are, and what each one means, is written
next to the code that reaches them (services/*/crashpoints.py or the service's module).
The watcher keeps its own `_crash` (services/watcher/reconciler.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

EXIT_CODE = 137  # 128 + SIGKILL


class Crashpoints:
    def __init__(self, known: Iterable[str], armed: str = "") -> None:
        self.known = frozenset(known)
        # Checked at start: a misspelt point would otherwise never fire and the crash
        # test would pass without ever crashing.
        if armed and armed not in self.known:
            raise ValueError(f"unknown crashpoint {armed!r}; known: {sorted(self.known)}")
        self.armed = armed

    def reach(self, name: str) -> None:
        if not self.armed:
            return  # every real deployment: not even the name is looked at
        if name not in self.known:
            # A reach() with a name missing from KNOWN could never be armed: a code bug,
            # reported only in the crash tests that arm something.
            raise ValueError(f"crashpoint {name!r} is not in the known set {sorted(self.known)}")
        if name == self.armed:
            sys.stderr.write(f"crashpoint {name} reached: exiting with {EXIT_CODE}\n")
            sys.stderr.flush()
            os._exit(EXIT_CODE)
