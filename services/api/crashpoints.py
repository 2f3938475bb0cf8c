"""The api's crash points (the mechanism is shared.crashpoints).

`Crashpoints(armed)` is `shared.crashpoints.Crashpoints` bound to the api's `KNOWN`
points; the deploy intake (services.api.intake) reaches them, so they fire for every
way a deploy is started (HTTP or a NATS deploy request). Armed through
SHAMAN_CRASHPOINT, for kill -9 tests only.

Points, in the order an accepted deploy reaches them:
- `after_deploy_record`: the idempotency claim holds the command and the deploy record
  exists (`pending`); the app record does not list it yet, nothing is published;
- `after_publish`: the command is in its work stream (PubAck received);
  `deploy.accepted` is not published and the caller has no answer.
"""

from __future__ import annotations

from shared import crashpoints

KNOWN = frozenset({"after_deploy_record", "after_publish"})


class Crashpoints(crashpoints.Crashpoints):
    def __init__(self, armed: str = "") -> None:
        super().__init__(KNOWN, armed)
