"""Named crash points for kill -9 fault tests (reliability.md §7, scenarios 5 and 6).

`Crashpoints(armed)` is passed to the code that owns each point; `crashpoints.reach(name)`
ends the process on the spot with exit code 137 (what a SIGKILL looks like to a
supervisor) when `name` is the armed one, and does nothing otherwise. Nothing is
flushed, acked or drained: that is the point. Armed only through
SHAMAN_CRASHPOINT; empty (the default) in every real deployment.

Points: `after_release_created` (release record written, app not yet updated),
`after_app_updated` (the release is current, the deploy not yet updated),
`after_nomad_register` (job registered, deploy not yet updated, command not acked).
"""

from __future__ import annotations

import os
import sys

KNOWN = frozenset({"after_release_created", "after_app_updated", "after_nomad_register"})


class Crashpoints:
    def __init__(self, armed: str = "") -> None:
        if armed and armed not in KNOWN:
            raise ValueError(f"unknown crashpoint {armed!r}; known: {sorted(KNOWN)}")
        self.armed = armed

    def reach(self, name: str) -> None:
        if self.armed and name == self.armed:
            sys.stderr.write(f"crashpoint {name} reached: exiting with 137\n")
            sys.stderr.flush()
            os._exit(137)
