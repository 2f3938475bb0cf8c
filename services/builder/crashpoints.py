"""The builder's crash points (the mechanism is shared.crashpoints).

`Crashpoints(armed)` is `shared.crashpoints.Crashpoints` bound to the builder's `KNOWN`
points; the build worker (services.builder.worker) reaches them. Armed through
SHAMAN_CRASHPOINT, for kill -9 tests only.

Points, in the order a successful build reaches them:
- `after_build_recorded`: the image (`repo@sha256:…`) and digest are written to the
  deploy record; neither `build.succeeded` nor the `DeployImage` command is published,
  the build message is not acked (and the build log not saved);
- `after_release_command`: `build.succeeded` and `DeployImage` are published and
  confirmed; the build message is not acked.
"""

from __future__ import annotations

from shared import crashpoints

KNOWN = frozenset({"after_build_recorded", "after_release_command"})


class Crashpoints(crashpoints.Crashpoints):
    def __init__(self, armed: str = "") -> None:
        super().__init__(KNOWN, armed)
