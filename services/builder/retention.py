"""Image retention: delete an app's built images that no kept release can roll back to.

For each app, the images in `<registry>/<app>` (the builder's own repository) are listed
by tag and resolved to digests. A digest is kept when any of the app's last
`keep_releases` releases pins it, or the app's current or last healthy release does, or
a deploy of the app is still on its way (then the whole app is skipped this round: its
fresh image may not have a release yet). Everything else is deleted by digest through the
registry v2 API (which removes every tag on it). Images in other repositories (image
deploys of external references) are never touched.

The registry frees disk only after its garbage collection (`docker-registry
garbage-collect`, an operator task); this module only removes manifests. It is safe to
run from every builder copy at once: deleting an already deleted digest is a no-op.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.builder import metrics
from services.builder.references import parse_image_ref
from services.builder.registry import RegistryClient
from shared.bus import TypedKV
from shared.errors import BackendUnavailable
from shared.logging import get_logger
from shared.records import AppRecord, DeployRecord, ReleaseRecord
from shared.tasks import raise_if_cancelled

log = get_logger(__name__)


@dataclass
class RetentionReport:
    app: str
    kept: set[str] = field(default_factory=set)  # digests
    deleted: list[str] = field(default_factory=list)  # digests
    skipped: str | None = None  # why nothing was looked at


def pinned_digests(releases: list[ReleaseRecord], app: AppRecord | None, keep: int) -> set[str]:
    """Digests a rollback may still need: the last `keep` releases, current, last healthy."""
    ordered = sorted(releases, key=lambda r: r.version)
    kept = {r.digest for r in ordered[-keep:]} if keep > 0 else set()
    if app is not None:
        wanted = {app.current_release, app.last_healthy_release} - {None}
        kept |= {r.digest for r in ordered if r.version in wanted}
    return kept


class ImageRetention:
    def __init__(
        self,
        registry: str,
        client: RegistryClient,
        apps: TypedKV[AppRecord],
        releases: TypedKV[ReleaseRecord],
        deploys: TypedKV[DeployRecord],
        keep_releases: int,
    ) -> None:
        self.registry = registry
        self.client = client
        self.apps = apps
        self.releases = releases
        self.deploys = deploys
        self.keep = max(1, keep_releases)

    async def prune_all(self) -> list[RetentionReport]:
        reports = []
        in_flight = await self._apps_with_deploys_in_flight()
        for app in sorted(await self.apps.keys()):
            reports.append(await self.prune_app(app, _in_flight=in_flight))
        return reports

    async def _apps_with_deploys_in_flight(self) -> set[str]:
        return {e.value.app for e in await self.deploys.values() if not e.value.terminal}

    async def prune_app(self, app: str, *, _in_flight: set[str] | None = None) -> RetentionReport:
        report = RetentionReport(app=app)
        in_flight = _in_flight
        if in_flight is None:
            in_flight = await self._apps_with_deploys_in_flight()
        if app in in_flight:
            report.skipped = "a deploy is in flight"
            return report
        app_entry = await self.apps.get(app)
        releases = await self._releases_of(app)
        report.kept = pinned_digests(releases, app_entry.value if app_entry else None, self.keep)
        tags = await self.client.tags(self.registry, app)
        digests: set[str] = set()
        for tag in tags:
            ref = parse_image_ref(f"{self.registry}/{app}:{tag}")
            try:
                digests.add(await self.client.resolve(ref))
            except Exception as exc:  # a tag deleted meanwhile: nothing to do for it
                log.debug("tag not resolved", app=app, tag=tag, error=repr(exc))
        for digest in sorted(digests - report.kept):
            if await self.client.delete(self.registry, app, digest):
                report.deleted.append(digest)
                metrics.IMAGES_DELETED.inc()
                log.info("image deleted by retention", app=app, digest=digest)
        return report

    async def _releases_of(self, app: str) -> list[ReleaseRecord]:
        # Filtered here, not with TypedKV.keys(prefix): nats-py's kv.keys(filters=...)
        # matches filters as substrings, so a "<app>.>" filter finds nothing.
        out = []
        for key in await self.releases.keys():
            if key.startswith(f"{app}."):
                entry = await self.releases.get(key)
                if entry is not None:
                    out.append(entry.value)
        return out

    async def run_forever(self, interval_s: float) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(interval_s)
            try:
                reports = await self.prune_all()
            except BackendUnavailable as exc:
                log.warning("image retention skipped", error=str(exc))
                continue
            deleted = sum(len(r.deleted) for r in reports)
            log.info("image retention ran", apps=len(reports), deleted=deleted)
