"""The scheduler's crash points (the mechanism is shared.crashpoints).

`Crashpoints(armed)` is `shared.crashpoints.Crashpoints` bound to the scheduler's
`KNOWN` points, so the release command handler and the reconciler keep taking it as
before. Armed through SHAMAN_CRASHPOINT, for kill -9 tests only.

Points: `after_release_created` (release record written, app not yet updated),
`after_app_updated` (the release is current, the deploy not yet updated),
`after_nomad_register` (job registered, deploy not yet updated, command not acked).
"""

from __future__ import annotations

from shared import crashpoints

KNOWN = frozenset({"after_release_created", "after_app_updated", "after_nomad_register"})


class Crashpoints(crashpoints.Crashpoints):
    def __init__(self, armed: str = "") -> None:
        super().__init__(KNOWN, armed)
