"""Accepting deploys: the one code path behind every call that starts one.

`POST /deploys` (image, git, upload), config and secret changes, process changes,
rollbacks and deploy requests published on NATS all end in `DeployIntake.submit`,
which follows docs/decisions/0001-deploy-flow.md step 1 exactly:

1. idempotency: claim the key (or replay the first deploy, doing its steps 4 and 5 again
   while it is still `pending`, in case the first request died before them; or take
   over a claim whose deploy never got queued);
2. `prepare` (the caller's source-specific work: store an upload, write Vault) builds
   the command;
3. create the DeployRecord (`pending`; a source deploy's carries its build command, for
   the re-drive sweep in services/api/redrive.py);
4. one CAS write of the app record: the deploy joins its `recent_deploys` (what the
   deploy list reads) and, for source deploys, becomes its `latest_deploy_id`; the
   previous latest is superseded if it is still `pending`/`building` (latest wins),
   publishing `deploy.superseded` + `deploy.finished`;
5. publish the command with `Nats-Msg-Id = <deploy_id>:<step>`, then `deploy.accepted`.

If NATS cannot confirm step 5 the deploy is marked `failed` ("could not queue") when
NATS still lets us, and the caller answers 503: never a 202 for work that was not
queued. It never waits for a build or a rollout. Crash points for kill -9 tests
(services.api.crashpoints) sit after step 3 and after the command of step 5.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from services.api.auth import Principal, Role, check_app_access
from services.api.crashpoints import Crashpoints
from services.api.http_errors import InProgress, field_error
from services.api.idempotency import Claim, IdempotencyEntry, IdempotencyStore
from services.api.ids import new_deploy_id
from shared.bus.connection import Bus
from shared.bus.kv import Entry, TypedKV
from shared.commands import BuildRequested, encode_command
from shared.errors import BackendUnavailable, ConflictError, NotFoundError
from shared.events import DeployAccepted, DeployFinished, DeploySuperseded
from shared.events.base import now
from shared.events.deploy import finished_msg_id
from shared.logging import get_logger
from shared.records import (
    APP_NAME_RE,
    AppRecord,
    DeployRecord,
    ReleaseKind,
    StatusChange,
    remember_deploy,
    transition,
)
from shared.tasks import capped_backoff

log = get_logger(__name__)

QUEUE_FAILED = "could not queue the deploy: NATS was unavailable"
# Written by the re-drive sweep (services/api/redrive.py) on a deploy whose request died
# before queueing it and was never retried: no client was told it was accepted.
ORPHANED = ("the api stopped before queueing this deploy, and no client was told it was "
            "accepted; deploy again")
# A claim with no deploy record yet belongs to a request still running, unless older.
STALE_CLAIM = timedelta(seconds=10)
# Re-publishing a queued command (or its deploy.accepted) is only safe while JetStream
# still dedupes its msg id (shared.bus.provision.DUPLICATE_WINDOW_S, 300 s).
REPUBLISH_WINDOW = timedelta(seconds=240)
CAS_ATTEMPTS = 500
PUBLISH_ATTEMPTS = 3


@dataclass(frozen=True)
class Work:
    """What a deploy queues: a command on a work subject, with its step name."""

    subject: str
    command: msgspec.Struct
    step: str  # "build" | "release"

    def msg_id(self, deploy_id: str) -> str:
        return f"{deploy_id}:{self.step}"


@dataclass(frozen=True)
class Accepted:
    deploy: DeployRecord
    created: bool  # False: an idempotent replay of an earlier request


@dataclass(frozen=True)
class DeploySpec:
    kind: ReleaseKind
    source: str  # for people: "ghcr.io/x/y:1", "git <url>@<ref>", ...
    description: str
    supersedes: bool  # a source deploy: latest wins
    prepare: Callable[[str], Awaitable[Work]]


class DeployIntake:
    def __init__(
        self,
        bus: Bus,
        apps: TypedKV[AppRecord],
        deploys: TypedKV[DeployRecord],
        idempotency: IdempotencyStore,
        *,
        publish_timeout_s: float = 2.0,
        crashpoints: Crashpoints | None = None,
    ) -> None:
        self.bus = bus
        self.crashpoints = crashpoints or Crashpoints()
        self.publish_timeout_s = publish_timeout_s
        self.apps = apps
        self.deploys = deploys
        self.idempotency = idempotency

    async def load_app(self, principal: Principal, name: str, need: Role) -> Entry[AppRecord]:
        """The app if the caller may `need` on it: 404 for unknown/other team, 403 for role."""
        # A name that is no app name (and could not be a KV key) simply names no app.
        entry = await self.apps.get(name) if APP_NAME_RE.match(name) else None
        if entry is None or entry.value.state == "destroyed":
            raise NotFoundError(f"app {name} does not exist")
        check_app_access(principal, name, entry.value.spec.team, need)
        return entry

    async def submit(
        self,
        principal: Principal,
        app: str,
        spec: DeploySpec,
        *,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> Accepted:
        deploy_id = new_deploy_id()
        claim: Claim | None = None
        if idempotency_key is not None:
            claim = await self.idempotency.claim(app, idempotency_key, fingerprint, deploy_id)
            if claim.existing is not None:
                earlier = await self._replay(claim, fingerprint)
                if earlier is not None:
                    return Accepted(earlier, created=False)
                try:
                    claim = await self.idempotency.take_over(claim, fingerprint, deploy_id)
                except ConflictError:
                    raise InProgress("another request with this Idempotency-Key is in "
                                     "progress; retry shortly") from None
        try:
            work = await spec.prepare(deploy_id)
        except BaseException:
            if claim is not None:
                with contextlib.suppress(Exception):
                    await self.idempotency.release(claim)
            raise
        payload = encode_command(work.command)
        msg_id = work.msg_id(deploy_id)
        if claim is not None:
            await self.idempotency.record_command(
                claim, IdempotencyEntry(deploy_id=deploy_id, fingerprint=fingerprint),
                work.subject, payload, msg_id,
            )
        t = now()
        record = DeployRecord(
            id=deploy_id, app=app, kind=spec.kind, source=spec.source,
            requested_by=principal.actor, description=spec.description,
            created_at=t, updated_at=t, history=[StatusChange(status="pending", time=t)],
            build_request=work.command if isinstance(work.command, BuildRequested) else None,
        )
        await self.deploys.create(deploy_id, record)
        self.crashpoints.reach("after_deploy_record")
        try:
            await self._record_on_app(app, deploy_id, latest=spec.supersedes)
            await self._publish_confirmed(work.subject, payload, msg_id)
        except BackendUnavailable:
            await self._mark(deploy_id, "failed", QUEUE_FAILED)
            raise
        except NotFoundError:
            await self._mark(deploy_id, "cancelled", "the app was destroyed")
            raise
        self.crashpoints.reach("after_publish")
        await self._publish_accepted(record)
        log.info("deploy accepted", app=app, deploy_id=deploy_id, kind=spec.kind,
                 actor=principal.actor)
        return Accepted(record, created=True)

    async def _publish_confirmed(self, subject: str, payload: bytes, msg_id: str) -> None:
        """Publish, retrying an unconfirmed publish a few times with the same msg id.

        A timed-out publish has an unknown outcome; the same Nats-Msg-Id makes the retry
        a no-op for JetStream if the first one was stored (reliability.md scenario 1).
        Once the connection is down there is no point retrying inside a request.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BackendUnavailable),
            stop=stop_after_attempt(PUBLISH_ATTEMPTS),
            wait=capped_backoff(0.05, 0.5, 0.05),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1 and not self.bus.connected:
                    raise BackendUnavailable("nats", "not connected")
                await self.bus.publish(subject, payload, msg_id=msg_id,
                                       timeout=self.publish_timeout_s)

    async def _replay(self, claim: Claim, fingerprint: str) -> DeployRecord | None:
        """The earlier deploy for this key, or None when the claim may be taken over."""
        earlier = claim.existing
        assert earlier is not None
        if earlier.fingerprint != fingerprint:
            raise field_error("Idempotency-Key", "was already used for a different request")
        age = now() - earlier.created_at
        entry = await self.deploys.get(earlier.deploy_id)
        if entry is None:
            if age < STALE_CLAIM:
                raise InProgress("another request with this Idempotency-Key is in progress; "
                                 "retry shortly")
            return None
        deploy = entry.value
        if deploy.status == "failed" and deploy.reason in (QUEUE_FAILED, ORPHANED):
            return None  # never accepted: the retry is a new deploy
        if age >= REPUBLISH_WINDOW:
            return deploy
        if deploy.status == "pending" and earlier.command:
            # The first request may have died between writing the deploy and queueing it
            # (crash point after_deploy_record): do its step 4, then its step 5. Both are
            # no-ops when it did them; the same msg id makes the publish one for JetStream.
            newer = await self._finish_on_app(deploy)
            if newer is not None:
                # Latest wins: a newer source deploy was accepted since; this one is not
                # queued, it is superseded as it would have been had it been queued.
                await self._publish_accepted(deploy)
                await self._supersede(deploy.app, deploy.id, newer)
                entry = await self.deploys.get(deploy.id)
                return entry.value if entry is not None else deploy
            await self.bus.publish(earlier.subject, earlier.command, msg_id=earlier.msg_id)
        # It may also have died after queueing, before `deploy.accepted` (crash point
        # after_publish): the timeline promises one for every accepted deploy. Late, maybe
        # after the build began, but once: inside the window its msg id is deduplicated.
        await self._publish_accepted(deploy)
        return deploy

    async def _publish_accepted(self, deploy: DeployRecord) -> None:
        try:
            await self.bus.publish_event(
                DeployAccepted(app=deploy.app, deploy_id=deploy.id, kind=deploy.kind,
                               source=deploy.source, requested_by=deploy.requested_by,
                               description=deploy.description, time=deploy.created_at),
                msg_id=f"{deploy.id}:accepted",
            )
        except BackendUnavailable as exc:
            # The work is queued and will run: the answer is still an honest 202.
            log.warning("deploy.accepted not published", app=deploy.app, deploy_id=deploy.id,
                        error=str(exc))

    async def _finish_on_app(self, deploy: DeployRecord) -> str | None:
        """Step 4 for a replayed deploy still `pending`: list it on the app record and,
        for a source deploy, make it the latest unless a newer one is (deploy ids sort by
        creation time). Returns that newer deploy's id, else None.

        Unlike `_record_on_app` it writes nothing when the first request got that far
        (the usual replay). A first request that is not dead but stalled between its
        steps 3 and 4 could still write its step 4 after this; the window is the same
        one two racing first requests already have.
        """
        # Only source deploys queue a BuildRequested (DeploySpec.supersedes).
        latest = deploy.build_request is not None
        found: dict[str, str | None] = {}

        def change(record: AppRecord) -> AppRecord | None:
            found.clear()
            if record.state == "destroyed":
                found["destroyed"] = record.spec.name
                return None
            current = record.latest_deploy_id
            listed = deploy.id in record.recent_deploys
            if latest and current is not None and current > deploy.id:
                found["newer"] = current
            take_over = latest and (current is None or current < deploy.id)
            if listed and not take_over:
                return None
            record.recent_deploys = remember_deploy(record.recent_deploys, deploy.id)
            if take_over:
                found["previous"] = current
                record.latest_deploy_id = deploy.id
            return record

        await self.apps.mutate(deploy.app, change, attempts=CAS_ATTEMPTS)
        if "destroyed" in found:
            await self._mark(deploy.id, "cancelled", "the app was destroyed")
            raise NotFoundError(f"app {deploy.app} does not exist")
        if found.get("previous"):
            await self._supersede(deploy.app, str(found["previous"]), deploy.id)
        return found.get("newer")

    async def _record_on_app(self, app: str, deploy_id: str, *, latest: bool) -> None:
        """One CAS write of the app record: the deploy joins `recent_deploys` and, for a
        source deploy (`latest`), becomes `latest_deploy_id`; the previous latest, if
        still pending or building, is then superseded."""
        previous: list[str | None] = [None]

        def change(record: AppRecord) -> AppRecord | None:
            if record.state == "destroyed":
                return None
            record.recent_deploys = remember_deploy(record.recent_deploys, deploy_id)
            if latest:
                previous[0] = record.latest_deploy_id
                record.latest_deploy_id = deploy_id
            return record

        # Every deploy of an app writes this one record: under a burst of N concurrent
        # deploys one writer wins each round, so allow well over N rounds.
        if await self.apps.mutate(app, change, attempts=CAS_ATTEMPTS) is None:
            raise NotFoundError(f"app {app} does not exist")
        if previous[0] and previous[0] != deploy_id:
            await self._supersede(app, previous[0], deploy_id)

    async def _supersede(self, app: str, old_id: str, new_id: str) -> None:
        def change(record: DeployRecord) -> DeployRecord | None:
            if record.status not in ("pending", "building"):
                return None
            if not transition(record, "superseded", f"superseded by {new_id}"):
                return None
            record.superseded_by = new_id
            return record

        entry = await self.deploys.mutate(old_id, change, attempts=CAS_ATTEMPTS)
        if entry is None:
            return
        log.info("deploy superseded", app=app, deploy_id=old_id, superseded_by=new_id)
        await self.bus.publish_event(
            DeploySuperseded(app=app, deploy_id=old_id, superseded_by=new_id),
            msg_id=f"{old_id}:superseded",
        )
        await self.bus.publish_event(
            DeployFinished(app=app, deploy_id=old_id, status="superseded",
                           reason=f"superseded by {new_id}"),
            msg_id=finished_msg_id(old_id, "superseded"),
        )

    async def _mark(self, deploy_id: str, status: str, reason: str) -> None:
        def change(record: DeployRecord) -> DeployRecord | None:
            return record if transition(record, status, reason) else None  # type: ignore[arg-type]

        try:
            await self.deploys.mutate(deploy_id, change)
        except Exception as exc:  # NATS is likely down too; the record stays pending
            log.warning("could not mark deploy", deploy_id=deploy_id, status=status,
                        error=repr(exc))
