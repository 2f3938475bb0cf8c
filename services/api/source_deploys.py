"""Source deploys (an image, a git ref, an uploaded tarball): validate, authorise, submit.

Shared by `POST /v1/apps/{app}/deploys` and the NATS deploy-request consumer, so a
request published on NATS gets exactly the validation and authorisation of the HTTP
call. Uploads are stored content-addressed in the `shaman_sources` object store as
`<app>/<sha256>` (a retry stores nothing new).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import nats.js.errors
from nats.js.object_store import ObjectStore

from services.api.auth import Principal
from services.api.context import ApiContext
from services.api.http_errors import TooManyBuilds, field_error
from services.api.image_ref import parse_image_reference, registry_of
from services.api.intake import Accepted, DeploySpec, Work
from services.api.models import DeployIn
from shared.bus.connection import UNAVAILABLE
from shared.commands import BuildRequested, GitSource, ImageSource, Source, UploadSource
from shared.errors import BackendUnavailable
from shared.events.deploy import GitRef
from shared.records import AppRecord
from shared.settings import ApiSettings
from shared.subjects import build_work_subject

IN_FLIGHT = frozenset({"pending", "building"})
BUILD_CAP_RETRY_S = 10.0


@dataclass(frozen=True)
class Upload:
    data: bytes
    digest: str  # sha256 hex

    @classmethod
    def of(cls, data: bytes) -> Upload:
        return cls(data=data, digest=hashlib.sha256(data).hexdigest())


def allowed_registries(settings: ApiSettings) -> frozenset[str]:
    return frozenset(r.strip() for r in settings.allowed_registries.split(",") if r.strip())


def check_registry(image: str, settings: ApiSettings, loc: str = "image") -> None:
    allowed = allowed_registries(settings)
    if allowed and registry_of(parse_image_reference(image)) not in allowed:
        raise field_error(loc, "the image's registry is not on the platform's allow-list "
                               "(SHAMAN_ALLOWED_REGISTRIES)")


def choose_source(app: AppRecord, body: DeployIn, upload: Upload | None) -> tuple[Source, str]:
    """The source to build and a label for people; the app's defaults fill an empty body."""
    given = [k for k in ("image", "git") if getattr(body, k) is not None]
    if upload is not None:
        if given:
            raise field_error(given[0], "an upload deploy takes no JSON source")
        return (UploadSource(object_name=f"{app.spec.name}/{upload.digest}",
                             digest=f"sha256:{upload.digest}", size=len(upload.data)),
                f"upload sha256:{upload.digest[:12]}")
    if len(given) > 1:
        raise field_error("git", "give exactly one of image or git, not both")
    if body.image is not None:
        return ImageSource(image=body.image), body.image
    if body.git is not None:
        return (GitSource(git=GitRef(url=body.git.url, ref=body.git.ref)),
                f"git {body.git.url}@{body.git.ref}")
    # An empty body deploys the app's own source (the green button).
    if app.spec.git is not None:
        return GitSource(git=app.spec.git), f"git {app.spec.git.url}@{app.spec.git.ref}"
    if app.spec.image is not None:
        ref = parse_image_reference(app.spec.image)
        if ref.tag or ref.digest:
            return ImageSource(image=app.spec.image), app.spec.image
    raise field_error("image", "give an image reference, a git source or a tarball upload "
                               "(the app has no default source to deploy)")


async def store_upload(store: ObjectStore, name: str, upload: Upload) -> None:
    try:
        try:
            info = await store.get_info(name)
            if info is not None and not info.deleted and info.size == len(upload.data):
                return  # content-addressed: already stored by an earlier try
        except nats.js.errors.ObjectNotFoundError:
            pass
        await store.put(name, upload.data)
    except UNAVAILABLE as exc:
        raise BackendUnavailable("nats", f"storing the upload failed: {exc!r}") from exc


async def check_team_build_cap(ctx: ApiContext, app: AppRecord) -> None:
    """429 when the app's team already has `team_build_cap` builds pending or building.

    Latest wins, so an app has at most one build in flight (its `latest_deploy_id`); this
    app's own is about to be superseded and does not count. A soft cap: two requests
    racing may both pass it.
    """
    cap = ctx.settings.team_build_cap
    if cap <= 0:
        return
    team = app.spec.team
    others = [e.value.latest_deploy_id for e in await ctx.apps.values()
              if e.value.spec.team == team and e.value.spec.name != app.spec.name
              and e.value.state != "destroyed" and e.value.latest_deploy_id]
    entries = await asyncio.gather(*(ctx.deploys.get(i) for i in others if i))
    in_flight = sum(1 for e in entries if e is not None and e.value.status in IN_FLIGHT)
    if in_flight >= cap:
        raise TooManyBuilds(f"team {team} already has {in_flight} builds in progress "
                          f"(the cap is {cap}); retry when one finishes",
                          retry_after_s=BUILD_CAP_RETRY_S)


async def submit_source_deploy(
    ctx: ApiContext,
    principal: Principal,
    app_name: str,
    body: DeployIn,
    *,
    upload: Upload | None = None,
    idempotency_key: str | None,
    fingerprint: str,
) -> Accepted:
    entry = await ctx.intake.load_app(principal, app_name, "deployer")
    app = entry.value
    source, label = choose_source(app, body, upload)
    if isinstance(source, ImageSource):
        check_registry(source.image, ctx.settings)
    description = body.description or f"Deploy {label}"

    async def prepare(deploy_id: str) -> Work:
        # Here, after the idempotency check: a retry of an accepted deploy is never capped.
        await check_team_build_cap(ctx, app)
        if upload is not None and isinstance(source, UploadSource):
            await store_upload(ctx.sources, source.object_name, upload)
        return Work(
            subject=build_work_subject(app_name),
            command=BuildRequested(deploy_id=deploy_id, app=app_name, source=source,
                                   requested_by=principal.actor, team=app.spec.team),
            step="build",
        )

    return await ctx.intake.submit(
        principal, app_name,
        DeploySpec(kind="deploy", source=label, description=description, supersedes=True,
                   prepare=prepare),
        idempotency_key=idempotency_key, fingerprint=fingerprint,
    )
