"""Handling the release work queue: one command → at most one release → a reconcile.

Step 3 of docs/decisions/0001-deploy-flow.md, crash-safe and idempotent across
redeliveries and concurrent copies of the scheduler:

1. The deploy record: a `Rollback` (or any command) whose deploy has no record yet
   creates it (`create`; automatic rollbacks have the id `<failed>-rollback`). A
   terminal deploy is skipped (acked). A deploy that already has `release` goes
   straight to the reconcile: the release was made before a crash or a redelivery.
   Otherwise the deploy is claimed, `→ deploying` (CAS), before any release is made:
   if the api superseded it in the meantime the command stops there (acked, no
   release); one already `deploying` is ours from a crashed earlier try.
2. The release: `create` `<app>.<app.next_release>`, built on the newest release below
   it (see `_base_release`: one created by another copy and not yet current makes the
   command wait and retry, so its change is not lost). If the key exists and carries
   this deploy id, it is ours from a crashed earlier try; if it is another deploy's,
   the app's `next_release` is moved past it (CAS) and the next number is tried. A
   release of ours orphaned by a crash, and then skipped by another writer, is found
   again by looking back over the releases made since this deploy was accepted, so a
   deploy never gets two releases.
3. The app (CAS): `next_release` past ours; if ours is newer than the current release
   it becomes current, this deploy becomes active and the previously active deploy,
   if not terminal, is `superseded` (latest wins). If a newer release is already
   current, this deploy is the one superseded.
4. The deploy: `release = v`; `release.created` is published.
5. The app is enqueued and the handler waits (bounded) for the first reconcile pass
   that starts afterwards, so that normally the command is acked only once the job
   is registered. Retries of the pass belong to the work queue, the periodic resync
   and the re-drive sweep, not to the message.

`Scale` re-renders the app with the instance count the api wrote on its record and
publishes `app.scaled`; `Reconcile` only enqueues. Commands for one app are serialized in this
process by a per-app lock (and across processes by the KV CAS above).

What only the scheduler can decide ends a deploy as `failed` here: unknown or destroyed
app, a rollback target that does not exist, has no image or whose image is gone from
the registry, no healthy release to roll back to.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import msgspec

from services.scheduler import metrics
from services.scheduler.crashpoints import Crashpoints
from services.scheduler.registry import RegistryChecker
from services.scheduler.releases import (
    Adoption,
    ReleaseCommandWithDeploy,
    adopt_release,
    build_release,
    kind_of,
    rollback_search_order,
    same_content,
    skip_release_number,
)
from services.scheduler.store import (
    Stores,
    cancel_deploy,
    fail_deploy,
    publish_finished,
    supersede_deploy,
)
from services.scheduler.workqueue import WorkQueue
from shared.bus import Bus, Delivery
from shared.commands import (
    ChangeConfig,
    ChangeProcess,
    ChangeSecrets,
    DeployImage,
    Reconcile,
    Rollback,
    Scale,
    release_decoder,
)
from shared.errors import ConflictError, TemporaryError
from shared.events import AppScaled, DeployAccepted, ReleaseCreated
from shared.logging import get_logger
from shared.records import (
    AppRecord,
    DeployRecord,
    ReleaseRecord,
    release_key,
    remember_deploy,
    transition,
)

log = get_logger(__name__)

# Releases are made after their deploy was accepted; this allows for clock skew
# between the api's and the scheduler's machines when looking for our own release.
CLOCK_SKEW = timedelta(minutes=5)
# How far back to look for a release of ours (or a healthy one to roll back to).
LOOKBACK = 50
CLAIM_ATTEMPTS = 20


class _AppLocks:
    """One asyncio.Lock per app, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, app: str) -> AsyncIterator[None]:
        held = self._locks.get(app)
        lock, users = held if held is not None else (asyncio.Lock(), 0)
        self._locks[app] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[app]
            if users <= 1:
                del self._locks[app]
            else:
                self._locks[app] = (lock, users - 1)


class ReleaseCommandHandler:
    def __init__(
        self,
        bus: Bus,
        stores: Stores,
        queue: WorkQueue,
        *,
        registry: RegistryChecker | None,
        reconcile_wait_s: float = 20.0,
        crashpoints: Crashpoints | None = None,
    ) -> None:
        self.crashpoints = crashpoints or Crashpoints()
        self.bus = bus
        self.stores = stores
        self.queue = queue
        self.registry = registry
        self.reconcile_wait_s = reconcile_wait_s
        self._locks = _AppLocks()

    # -- entry points --------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        """The WorkConsumer handler (undecodable payloads are termed by the runtime)."""
        command = release_decoder.decode(delivery.data)
        reconcile = False
        async with self._locks.hold(command.app):
            match command:
                case Scale():
                    reconcile = await self._scale(command)
                case Reconcile():
                    log.info("reconcile requested", app=command.app, reason=command.reason)
                    reconcile = True
                case _:
                    reconcile = await self._release(command)
        if reconcile:
            await self._await_pass(command.app)

    async def on_dead_letter(self, data: bytes, reason: str, _headers: dict[str, str]) -> None:
        """A command that can never be handled: its deploy ends `failed` with the reason."""
        try:
            command = release_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        deploy_id = getattr(command, "deploy_id", None)
        if deploy_id:
            await fail_deploy(self.bus, self.stores, deploy_id,
                              f"the scheduler could not process the request: {reason}")
            metrics.DEPLOYS_FAILED.labels(cause="dead_letter").inc()

    async def _await_pass(self, app: str) -> None:
        try:
            await self.queue.run(app, timeout_s=self.reconcile_wait_s)
        except TimeoutError:
            log.warning("reconcile still running; acking the command", app=app)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The queue retries the pass with backoff; the message has done its part.
            log.warning("first reconcile pass failed; the queue retries it", app=app,
                        error=str(exc)[:500])

    # -- scale -----------------------------------------------------------------------

    async def _scale(self, command: Scale) -> bool:
        """The api already wrote the count on the app record (its field); render it.

        The command's own number is never written back: a redelivered older Scale must
        not undo a newer one. The reconcile renders whatever the record says now.
        """
        if await self.stores.apps.get(command.app) is None:
            log.warning("scale of an unknown app ignored", app=command.app)
            return False
        self.queue.add(command.app)
        log.info("app scaled", app=command.app, instances=command.instances,
                 previous=command.previous)
        await self.bus.publish_event(
            AppScaled(app=command.app, instances=command.instances, previous=command.previous,
                      requested_by=command.requested_by),
            msg_id=f"scale:{command.request_id}",
        )
        return True

    # -- releases --------------------------------------------------------------------

    async def _release(self, command: ReleaseCommandWithDeploy) -> bool:
        """Make (or find) this deploy's release; True when the app should be reconciled."""
        deploy = await self._deploy_record(command)
        if deploy.terminal:
            log.info("command skipped: deploy already ended", app=command.app,
                     deploy_id=deploy.id, status=deploy.status)
            return False
        if deploy.release is not None:
            # Made before a crash or by an earlier delivery. If the crash came between the
            # deploy write and the event, announce it now (the msg id keeps it single).
            if deploy.status == "deploying" and deploy.job_modify_index is None:
                release = await self._get_release(command.app, deploy.release)
                if release is not None and release.deploy_id == deploy.id:
                    await self._announce(release)
            return True
        app_entry = await self.stores.apps.get(command.app)
        if app_entry is None:
            await self._fail(deploy.id, f"app {command.app} does not exist", "unknown_app")
            return False
        app = app_entry.value
        if app.state == "destroyed":
            await self._fail(deploy.id, f"app {command.app} was destroyed", "destroyed_app")
            return False
        if not await self._claim(deploy):
            return False

        # Ours from a crashed earlier try? Then it is adopted as it is: the rollback checks
        # below were passed then, and would now see our own release as the current one.
        release = await self._find_own_release(app, deploy)
        if release is None:
            target: ReleaseRecord | None = None
            if isinstance(command, Rollback):
                target = await self._rollback_target(command, app, deploy)
                if target is None:
                    return False
            release = await self._create_release(command, deploy, target)
        return await self._adopt(release, deploy)

    async def _claim(self, deploy: DeployRecord) -> bool:
        """Move the deploy `→ deploying` (CAS) before any release is made for it.

        The api supersedes `pending`/`building` deploys when a newer source deploy comes
        in; claiming first means either the api's supersede wins (and we stop here: no
        release, so the superseded image never becomes current) or ours does (and the
        api leaves a `deploying` deploy alone; latest release wins later). A deploy
        already `deploying` is ours from a crashed earlier try. False: it has ended.
        """
        ended: list[DeployRecord] = []

        def change(record: DeployRecord) -> DeployRecord | None:
            ended.clear()
            if record.terminal:
                ended.append(record)
                return None
            return record if transition(record, "deploying") else None

        await self.stores.deploys.mutate(deploy.id, change)
        if ended:
            log.info("command skipped: deploy ended before it was claimed", app=deploy.app,
                     deploy_id=deploy.id, status=ended[-1].status)
            return False
        return True

    async def _deploy_record(self, command: ReleaseCommandWithDeploy) -> DeployRecord:
        entry = await self.stores.deploys.get(command.deploy_id)
        if entry is not None:
            return entry.value
        automatic = isinstance(command, Rollback) and command.automatic
        record = DeployRecord(
            id=command.deploy_id,
            app=command.app,
            kind=kind_of(command),
            source=_source_of(command),
            requested_by=command.created_by,
            automatic=automatic,
            rollback_for=command.failed_deploy_id if isinstance(command, Rollback) else None,
            image=command.image if isinstance(command, DeployImage) else None,
            digest=command.digest if isinstance(command, DeployImage) else None,
            description=_description_of(command),
        )
        try:
            await self.stores.deploys.create(command.deploy_id, record)
        except ConflictError:
            entry = await self.stores.deploys.get(command.deploy_id)
            if entry is None:  # created and deleted in between: nothing sensible to do now
                raise
            return entry.value
        log.info("deploy record created", app=command.app, deploy_id=command.deploy_id,
                 kind=record.kind, automatic=automatic)
        await self.bus.publish_event(
            DeployAccepted(app=command.app, deploy_id=command.deploy_id, kind=record.kind,
                           source=record.source, requested_by=command.created_by),
            msg_id=f"{command.deploy_id}:accepted",
        )
        return record

    async def _fail(self, deploy_id: str, reason: str, cause: str) -> None:
        if await fail_deploy(self.bus, self.stores, deploy_id, reason):
            metrics.DEPLOYS_FAILED.labels(cause=cause).inc()

    async def _get_release(self, app: str, version: int) -> ReleaseRecord | None:
        entry = await self.stores.releases.get(release_key(app, version))
        return entry.value if entry is not None else None

    async def _rollback_target(
        self, command: Rollback, app: AppRecord, deploy: DeployRecord
    ) -> ReleaseRecord | None:
        """The release to restore, or None after ending the deploy with the reason."""
        name = app.spec.name
        if command.automatic and command.failed_deploy_id:
            failed = await self.stores.deploys.get(command.failed_deploy_id)
            failed_release = failed.value.release if failed is not None else None
            if failed_release is not None and app.current_release != failed_release:
                await self._cancel(deploy, f"release v{failed_release} is no longer current "
                                           f"(v{app.current_release} is): nothing to roll back")
                return None

        if command.to_version is not None:
            target = await self._get_release(name, command.to_version)
            if target is None:
                await self._fail(deploy.id, f"cannot roll back: release v{command.to_version} "
                                            f"of {name} does not exist", "rollback_target")
                return None
        else:
            target = await self._last_healthy_release(app)
            if target is None:
                where = f"before v{app.current_release}" if app.current_release else "yet"
                await self._fail(deploy.id, f"cannot roll back: {name} has no healthy release "
                                            f"{where}", "rollback_target")
                return None
        if not target.image:
            await self._fail(deploy.id, f"cannot roll back to v{target.version}: it has no image",
                             "rollback_target")
            return None
        if self.registry is not None:
            exists = await self.registry.image_exists(target.image)
            if exists is False:
                await self._fail(
                    deploy.id,
                    f"cannot roll back to v{target.version}: its image {target.image} is no "
                    f"longer in the registry",
                    "image_gone",
                )
                return None
        return target

    async def _last_healthy_release(self, app: AppRecord) -> ReleaseRecord | None:
        name = app.spec.name
        for version in rollback_search_order(app)[:LOOKBACK]:
            release = await self._get_release(name, version)
            if release is None or not release.image:
                continue
            if version == app.last_healthy_release:
                return release
            deploy = await self.stores.deploys.get(release.deploy_id)
            if deploy is not None and deploy.value.status == "healthy":
                return release
        return None

    async def _cancel(self, deploy: DeployRecord, reason: str) -> None:
        await cancel_deploy(self.bus, self.stores, deploy.id, reason)

    async def _find_own_release(self, app: AppRecord, deploy: DeployRecord) -> ReleaseRecord | None:
        """A release this deploy made before a crash, below the app's next number."""
        oldest = deploy.created_at - CLOCK_SKEW
        version = app.next_release - 1
        for _ in range(LOOKBACK):
            if version < 1:
                return None
            release = await self._get_release(app.spec.name, version)
            if release is not None:
                if release.deploy_id == deploy.id:
                    log.info("found release from an earlier try", app=app.spec.name,
                             deploy_id=deploy.id, release=version)
                    return release
                if release.created_at < oldest:
                    return None
            version -= 1
        return None

    async def _create_release(
        self,
        command: ReleaseCommandWithDeploy,
        deploy: DeployRecord,
        target: ReleaseRecord | None,
    ) -> ReleaseRecord:
        name = command.app
        for _ in range(CLAIM_ATTEMPTS):
            entry = await self.stores.apps.get(name)
            if entry is None:
                raise ConflictError(f"app {name} vanished while creating a release")
            app = entry.value
            version = app.next_release
            # A rollback restores the target's whole content: it needs no base.
            base = (None if target is not None
                    else await self._base_release(command, app, version))
            release = build_release(command, app=app, version=version, base=base, target=target)
            try:
                await self.stores.releases.create(release_key(name, version), release)
            except ConflictError:
                existing = await self._get_release(name, version)
                if existing is not None and existing.deploy_id == deploy.id:
                    return existing  # ours, from a crashed earlier try
                # Another deploy holds this number (in flight elsewhere, or orphaned by a
                # crash): move the counter past it and try the next one.
                await self.stores.apps.mutate(name, _skip_past(version))
                continue
            self.crashpoints.reach("after_release_created")
            metrics.RELEASES_CREATED.labels(kind=release.kind).inc()
            log.info("release created", app=name, release=version, deploy_id=deploy.id,
                     kind=release.kind, description=release.description)
            return release
        raise ConflictError(f"{name}: could not claim a release number after "
                            f"{CLAIM_ATTEMPTS} tries")

    async def _base_release(
        self, command: ReleaseCommandWithDeploy, app: AppRecord, version: int
    ) -> ReleaseRecord | None:
        """What release `version` builds on: the newest release below it, which may not
        be `app.current_release` yet.

        Another copy of the scheduler may have created the release below ours and not
        adopted it yet (the app record still names the older current one); building on
        the current one would then drop that release's change once ours wins. So a
        newer release whose deploy is still running makes us wait (TemporaryError: the
        command is nak'ed and retried shortly, by when it is current) — unless building
        on it would make exactly the same release (say, two image deploys in a burst:
        ours replaces the only thing theirs changed). A newer release whose deploy has
        ended never became current and never will: history, skipped. Releases older
        than the app record belong to an earlier app of the same name.
        """
        name, current = app.spec.name, app.current_release
        base = await self._get_release(name, current) if current is not None else None
        floor = current if current is not None else 0
        candidate = version - 1
        for _ in range(LOOKBACK):
            if candidate <= floor:
                break
            release = await self._get_release(name, candidate)
            if release is not None:
                if release.created_at < app.created_at:
                    break  # an earlier app of this name
                entry = await self.stores.deploys.get(release.deploy_id)
                in_flight = entry is not None and not entry.value.terminal
                if in_flight and not same_content(
                    build_release(command, app=app, version=version, base=release),
                    build_release(command, app=app, version=version, base=base),
                ):
                    raise TemporaryError(
                        f"release v{candidate} of {name} (deploy {release.deploy_id}) is not "
                        f"current yet; the next release builds on it", retry_after_s=0.5)
            candidate -= 1
        return base

    async def _adopt(self, release: ReleaseRecord, deploy: DeployRecord) -> bool:
        """CAS the app to our release, move the deploys, announce it; True → reconcile."""
        name, version = release.app, release.version
        decisions: list[Adoption] = []

        def change(app: AppRecord) -> AppRecord | None:
            decisions.append(adopt_release(app, version, deploy.id))
            listed = deploy.id in app.recent_deploys
            if deploy.automatic and not listed:
                # The api lists the deploys it accepts; automatic rollbacks are created here.
                app.recent_deploys = remember_deploy(app.recent_deploys, deploy.id)
            return app if decisions[-1].changed or (deploy.automatic and not listed) else None

        await self.stores.apps.mutate(name, change)
        self.crashpoints.reach("after_app_updated")
        if not decisions:
            raise ConflictError(f"app {name} vanished while adopting release v{version}")
        decision = decisions[-1]  # the attempt that was written (or found nothing to do)

        if not decision.current:
            log.info("release superseded before it became current", app=name, release=version,
                     deploy_id=deploy.id, superseded_by=decision.superseded_by)
            await supersede_deploy(self.bus, self.stores, deploy.id,
                                   decision.superseded_by or "a newer release", release=version)
            return False

        previous = decision.previous_active
        # The deploy a rollback is for keeps its own outcome (the watcher moves it to
        # rolled_back or failed): it is not superseded by its own rollback.
        if previous and previous not in (deploy.id, deploy.rollback_for):
            await supersede_deploy(self.bus, self.stores, previous, deploy.id)

        nothing_to_run = not release.image

        def mark(record: DeployRecord) -> DeployRecord | None:
            if record.release is not None:
                return None
            record.release = version
            transition(record, "deploying")  # normally claimed already (_claim)
            if nothing_to_run and record.status == "deploying":
                transition(record, "healthy",
                           f"release v{version} recorded; no image deployed yet, nothing to run")
            return record

        updated = await self.stores.deploys.mutate(deploy.id, mark)
        await self._announce(release)
        if nothing_to_run and updated is not None and updated.value.status == "healthy":
            await publish_finished(self.bus, updated.value)
        return not nothing_to_run


    async def _announce(self, release: ReleaseRecord) -> None:
        await self.bus.publish_event(
            ReleaseCreated(app=release.app, deploy_id=release.deploy_id,
                           release=release.version, kind=release.kind,
                           description=release.description, created_by=release.created_by,
                           image=release.image),
            msg_id=f"{release.deploy_id}:release.created",
        )


def _skip_past(version: int) -> Callable[[AppRecord], AppRecord | None]:
    def change(app: AppRecord) -> AppRecord | None:
        return app if skip_release_number(app, version) else None

    return change


def _description_of(command: ReleaseCommandWithDeploy) -> str:
    if isinstance(command, Rollback):
        what = f"Rollback to v{command.to_version}" if command.to_version else "Rollback"
        if command.automatic:
            why = f": {command.reason}" if command.reason else ""
            return f"Automatic rollback after {command.failed_deploy_id}{why}"
        return what
    if isinstance(command, DeployImage | ChangeSecrets | ChangeProcess):
        return command.description
    return ""


def _source_of(command: ReleaseCommandWithDeploy) -> str:
    match command:
        case DeployImage():
            return command.image
        case Rollback():
            return f"rollback to v{command.to_version}" if command.to_version else "rollback"
        case ChangeConfig():
            return "config"
        case ChangeSecrets():
            return "secrets"
        case ChangeProcess():
            return "process"
    return ""
