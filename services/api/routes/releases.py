"""/v1/apps/{app}/releases, rollback and scale."""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.api.http_errors import field_error
from services.api.idempotency import fingerprint
from services.api.intake import DeploySpec, Work
from services.api.models import (
    DeployView,
    ReleaseList,
    ReleaseView,
    RollbackIn,
    ScaleAccepted,
    ScaleIn,
)
from services.api.routes.deploys import IDEMPOTENCY_HEADER, idempotency_key_of
from services.api.routing import Call, RouteSpec, json_response
from services.api.views import deploy_view, release_view
from shared.commands import Rollback, Scale
from shared.errors import NotFoundError
from shared.records import AppRecord, release_key
from shared.subjects import release_work_subject

IDEMPOTENCY = ((IDEMPOTENCY_HEADER, "repeat the request safely for 24 h"),)


async def list_releases(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    entries = await call.ctx.releases.values(entry.value.spec.name)
    records = [e.value for e in entries]
    records.sort(key=lambda r: r.version, reverse=True)
    return json_response(ReleaseList(releases=[release_view(r) for r in records]))


async def get_release(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    raw = call.path_param("version").removeprefix("v")
    if not raw.isdigit() or int(raw) < 1:
        raise field_error("version", "must be a release number like 3 or v3")
    found = await call.ctx.releases.get(release_key(entry.value.spec.name, int(raw)))
    if found is None:
        raise NotFoundError(f"release v{raw} does not exist")
    return json_response(release_view(found.value))


async def rollback(call: Call) -> web.StreamResponse:
    body = await call.json_body(RollbackIn)
    entry = await call.load_app("deployer")
    app = entry.value.spec.name
    target = body.version
    if target is not None:
        release = await call.ctx.releases.get(release_key(app, target))
        if release is None:
            raise field_error("version", f"release v{target} does not exist")
        # Before anything is written; the scheduler checks again (this check lets an
        # unreachable registry through, the scheduler retries it).
        if await call.ctx.images.exists(release.value.image) is False:
            raise field_error("version", f"the image of release v{target} is no longer in "
                                         "its registry; roll back to another version")
        description = f"Rollback to v{target}"
    else:
        if entry.value.last_healthy_release is None and entry.value.current_release is None:
            raise field_error("version", "the app has no release to roll back to")
        description = "Rollback to the last healthy release"

    async def prepare(deploy_id: str) -> Work:
        return Work(release_work_subject(app),
                    Rollback(deploy_id=deploy_id, app=app, to_version=target, automatic=False,
                             created_by=call.principal.actor, reason="requested"), "release")

    raw = body.model_dump_json().encode()
    accepted = await call.ctx.intake.submit(
        call.principal, app,
        DeploySpec(kind="rollback", source=f"v{target}" if target else "last healthy",
                   description=description, supersedes=False, prepare=prepare),
        idempotency_key=idempotency_key_of(call), fingerprint=fingerprint("rollback", app, raw),
    )
    call.deploy_id = accepted.deploy.id
    return json_response(deploy_view(accepted.deploy), status=202 if accepted.created else 200)


async def scale(call: Call) -> web.StreamResponse:
    body = await call.json_body(ScaleIn)
    entry = await call.load_app("deployer")
    app = entry.value.spec.name
    previous = [entry.value.spec.instances]

    def change(record: AppRecord) -> AppRecord | None:
        if record.state == "destroyed":
            return None
        previous[0] = record.spec.instances
        record.spec = msgspec.structs.replace(record.spec, instances=body.instances)
        return record

    if await call.ctx.apps.mutate(app, change) is None:
        raise NotFoundError(f"app {app} does not exist")
    # Sent even when the count did not change: a retry after a 503 must reach the
    # scheduler, and scaling to the current count is a no-op there.
    await call.ctx.bus.publish_command(
        release_work_subject(app),
        Scale(app=app, instances=body.instances, previous=previous[0],
              requested_by=call.principal.actor, request_id=call.request_id),
        msg_id=f"{call.request_id}:scale",
    )
    return json_response(ScaleAccepted(app=app, instances=body.instances, previous=previous[0],
                                       request_id=call.request_id), status=202)


ROUTES = [
    RouteSpec("GET", "/v1/apps/{app}/releases", list_releases, "Release history, newest first",
              responses={200: ReleaseList}, tag="releases"),
    RouteSpec("GET", "/v1/apps/{app}/releases/{version}", get_release, "One release",
              responses={200: ReleaseView}, tag="releases"),
    RouteSpec("POST", "/v1/apps/{app}/rollback", rollback,
              "Roll back to a release (default: the last healthy one) as a new release",
              role="deployer", body=RollbackIn, responses={202: DeployView, 200: DeployView},
              headers=IDEMPOTENCY, action="deploy.rollback", tag="releases"),
    RouteSpec("POST", "/v1/apps/{app}/scale", scale,
              "Change the instance count (no new release)", role="deployer", body=ScaleIn,
              responses={202: ScaleAccepted}, action="app.scale", tag="apps"),
]
