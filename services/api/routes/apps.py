"""/v1/apps: create, list, read, change and destroy apps."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.api.auth import Principal
from services.api.http_errors import AlreadyExists, Forbidden, field_error
from services.api.idempotency import fingerprint
from services.api.intake import DeploySpec, Work
from services.api.models import AppChanged, AppCreate, AppDeleted, AppList, AppPatch, AppView
from services.api.routing import Call, RouteSpec, json_response
from services.api.source_deploys import check_registry
from services.api.views import app_view, deploy_view
from shared.commands import ChangeProcess, Reconcile, Scale
from shared.errors import ConflictError, NotFoundError
from shared.events.deploy import GitRef
from shared.logging import get_logger
from shared.records import (
    AppRecord,
    AppSpec,
    HealthCheck,
    ProcessSpec,
    RolloutPolicy,
    release_key,
)
from shared.subjects import release_work_subject

log = get_logger(__name__)

PROCESS_FIELDS = ("port", "cpu_mhz", "memory_mb", "command", "args", "health", "rollout",
                  "domains")


def _team_for(principal: Principal, requested: str | None) -> str:
    team = requested or principal.default_team()
    if not principal.covers(team):
        raise Forbidden(f"this token may not create apps in team {team}")
    return team


async def create_app_route(call: Call) -> web.StreamResponse:
    body = await call.json_body(AppCreate)
    call.app = body.name
    if body.image is not None:
        check_registry(body.image, call.settings)
    team = _team_for(call.principal, body.team)
    call.team = team
    spec = AppSpec(
        name=body.name, team=team, image=body.image,
        git=GitRef(url=body.git.url, ref=body.git.ref) if body.git else None,
        dockerfile=body.dockerfile, instances=body.instances, auto_rollback=body.auto_rollback,
        process=ProcessSpec(
            port=body.port, command=body.command, args=list(body.args), cpu_mhz=body.cpu_mhz,
            memory_mb=body.memory_mb,
            health=HealthCheck(**body.health.model_dump()),
            rollout=RolloutPolicy(**body.rollout.model_dump()),
            domains=list(body.domains),
        ),
    )
    record = AppRecord(spec=spec, created_by=call.principal.actor)
    try:
        await call.ctx.apps.create(body.name, record)
    except ConflictError:
        # A destroyed app's record stays as a tombstone until its name is reused, so the
        # scheduler always finds it `destroyed` and stops the job (it never stops the job
        # of an app whose record is merely missing).
        existing = await call.ctx.apps.get(body.name)
        if existing is None or existing.value.state != "destroyed":
            raise AlreadyExists(f"app {body.name} already exists") from None
        try:
            await call.ctx.apps.update(body.name, record, last=existing.revision)
        except ConflictError:
            raise AlreadyExists(f"app {body.name} already exists") from None
    log.info("app created", app=body.name, team=team, actor=call.principal.actor)
    return json_response(app_view(record), status=201)


async def list_apps(call: Call) -> web.StreamResponse:
    entries = await call.ctx.apps.values()
    visible = [app_view(e.value) for e in entries
               if e.value.state != "destroyed" and call.principal.covers(e.value.spec.team)]
    visible.sort(key=lambda a: a.name)
    return json_response(AppList(apps=visible))


async def get_app(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    return json_response(app_view(entry.value))


def _patched_spec(spec: AppSpec, body: AppPatch) -> AppSpec:
    given = body.model_fields_set
    p = spec.process
    process = ProcessSpec(
        port=body.port if "port" in given and body.port is not None else p.port,
        command=body.command if "command" in given else p.command,
        args=list(body.args) if "args" in given and body.args is not None else p.args,
        cpu_mhz=body.cpu_mhz if "cpu_mhz" in given and body.cpu_mhz is not None else p.cpu_mhz,
        memory_mb=body.memory_mb if "memory_mb" in given and body.memory_mb is not None
        else p.memory_mb,
        health=HealthCheck(**body.health.model_dump()) if body.health is not None else p.health,
        rollout=RolloutPolicy(**body.rollout.model_dump()) if body.rollout is not None
        else p.rollout,
        domains=list(body.domains) if body.domains is not None else p.domains,
    )
    git = spec.git
    if "git" in given:
        git = GitRef(url=body.git.url, ref=body.git.ref) if body.git else None
    return AppSpec(
        name=spec.name,
        team=body.team if body.team is not None else spec.team,
        image=body.image if "image" in given else spec.image,
        git=git,
        dockerfile=body.dockerfile if body.dockerfile is not None else spec.dockerfile,
        instances=body.instances if body.instances is not None else spec.instances,
        auto_rollback=body.auto_rollback if body.auto_rollback is not None
        else spec.auto_rollback,
        process=process,
    )


async def patch_app(call: Call) -> web.StreamResponse:
    body = await call.json_body(AppPatch)
    for name in ("port", "cpu_mhz", "memory_mb", "instances", "team", "dockerfile",
                 "auto_rollback", "health", "rollout", "domains", "args"):
        if name in body.model_fields_set and getattr(body, name) is None:
            raise field_error(name, "cannot be null; leave the field out to keep it")
    entry = await call.load_app("deployer")
    current = entry.value
    if body.team is not None and body.team != current.spec.team:
        if not call.principal.at_least("admin"):
            raise Forbidden("only admins may move an app to another team")
        if not call.principal.covers(body.team):
            raise Forbidden(f"this token may not move apps into team {body.team}")
    if body.image is not None:
        check_registry(body.image, call.settings)
    previous_instances = [current.spec.instances]

    def change(record: AppRecord) -> AppRecord | None:
        if record.state == "destroyed":
            return None
        previous_instances[0] = record.spec.instances
        record.spec = _patched_spec(record.spec, body)
        return record

    written = await call.ctx.apps.mutate(current.spec.name, change)
    if written is None:
        raise NotFoundError(f"app {current.spec.name} does not exist")
    record = written.value
    app = record.spec.name
    if record.spec.instances != previous_instances[0]:
        await call.ctx.bus.publish_command(
            release_work_subject(app),
            Scale(app=app, instances=record.spec.instances, previous=previous_instances[0],
                  requested_by=call.principal.actor, request_id=call.request_id),
            msg_id=f"{call.request_id}:scale",
        )
    deploy = None
    if any(f in body.model_fields_set for f in PROCESS_FIELDS) and \
            await _process_differs_from_release(call, record):
        changed = sorted(f for f in PROCESS_FIELDS if f in body.model_fields_set)
        description = "Change " + ", ".join(changed)

        async def prepare(deploy_id: str) -> Work:
            return Work(release_work_subject(app),
                        ChangeProcess(deploy_id=deploy_id, app=app, description=description,
                                      created_by=call.principal.actor), "release")

        accepted = await call.ctx.intake.submit(
            call.principal, app,
            DeploySpec(kind="process", source="process", description=description,
                       supersedes=False, prepare=prepare),
            idempotency_key=None, fingerprint=fingerprint(call.request_id),
        )
        deploy = deploy_view(accepted.deploy)
        call.deploy_id = accepted.deploy.id
    result = AppChanged(app=app_view(record), deploy=deploy)
    return json_response(result, status=202 if deploy else 200)


async def _process_differs_from_release(call: Call, record: AppRecord) -> bool:
    """A process change needs a release only when the running release pins another spec."""
    if record.current_release is None:
        return False  # nothing runs yet: the first deploy pins the new spec
    release = await call.ctx.releases.get(release_key(record.spec.name, record.current_release))
    return release is None or release.value.process != record.spec.process


async def delete_app(call: Call) -> web.StreamResponse:
    entry = await call.load_app("admin")
    app = entry.value.spec.name

    def mark(record: AppRecord) -> AppRecord | None:
        record.state = "destroyed"
        return record

    written = await call.ctx.apps.mutate(app, mark)
    if written is None:
        raise NotFoundError(f"app {app} does not exist")
    # The scheduler stops the Nomad job of an app whose record says `destroyed`; the
    # record stays (a tombstone) so that it still says so whenever the scheduler looks.
    await call.ctx.bus.publish_command(
        release_work_subject(app), Reconcile(app=app, reason="app destroyed"),
        msg_id=f"{app}:destroy:{written.revision}",
    )
    await _remove_records(call, app)
    log.info("app destroyed", app=app, actor=call.principal.actor)
    return json_response(AppDeleted(app=app, state="destroyed"), status=202)


async def _remove_records(call: Call, app: str) -> None:
    """Releases and deploys go; a new app of the same name starts at v1 again."""
    ctx = call.ctx
    for key in await ctx.releases.keys(app):
        await ctx.releases.delete(key)
    deploy_ids = [e.key for e in await ctx.deploys.values()
                  if e.value.app == app]
    await asyncio.gather(*(ctx.deploys.delete(k) for k in deploy_ids))


ROUTES = [
    RouteSpec("POST", "/v1/apps", create_app_route, "Create an app", role="deployer",
              body=AppCreate, responses={201: AppView}, errors=(400, 401, 403, 409, 413, 422,
                                                                429, 503),
              action="app.create"),
    RouteSpec("GET", "/v1/apps", list_apps, "List the apps this token can see",
              responses={200: AppList}),
    RouteSpec("GET", "/v1/apps/{app}", get_app, "Read an app", responses={200: AppView}),
    RouteSpec("PATCH", "/v1/apps/{app}", patch_app,
              "Change an app; process fields start a deploy, instances scale",
              role="deployer", body=AppPatch, responses={200: AppChanged, 202: AppChanged},
              action="app.update"),
    RouteSpec("DELETE", "/v1/apps/{app}", delete_app,
              "Destroy an app: its Nomad job is stopped, its releases and deploys removed",
              role="admin", responses={202: AppDeleted}, action="app.destroy"),
]
