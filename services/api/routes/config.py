"""/v1/apps/{app}/config: read the current release's config vars; set and unset them."""

from __future__ import annotations

from aiohttp import web

from services.api.http_errors import RequestInvalid
from services.api.idempotency import fingerprint
from services.api.intake import DeploySpec, Work
from services.api.models import ConfigPatch, ConfigView, DeployView, env_name_problem
from services.api.routes.deploys import IDEMPOTENCY_HEADER, idempotency_key_of
from services.api.routing import Call, RouteSpec, json_response
from services.api.views import deploy_view
from shared.commands import ChangeConfig
from shared.errors import FieldError
from shared.records import release_key
from shared.subjects import release_work_subject


def check_names(names: list[str]) -> None:
    problems = [FieldError(loc=n, msg=p) for n in names if (p := env_name_problem(n))]
    if problems:
        raise RequestInvalid(problems)


def describe(set_: list[str], unset: list[str]) -> str:
    parts = []
    if set_:
        parts.append("Set " + ", ".join(sorted(set_)))
    if unset:
        parts.append("Unset " + ", ".join(sorted(unset)))
    text = "; ".join(parts)
    return text if len(text) <= 200 else text[:197] + "..."


async def get_config(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    app = entry.value.spec.name
    release = entry.value.current_release
    config: dict[str, str] = {}
    if release is not None:
        found = await call.ctx.releases.get(release_key(app, release))
        if found is not None:
            config = dict(found.value.config)
    return json_response(ConfigView(app=app, release=release, config=config))


async def patch_config(call: Call) -> web.StreamResponse:
    body = await call.json_body(ConfigPatch)
    changes = body.root
    check_names(list(changes))
    entry = await call.load_app("deployer")
    app = entry.value.spec.name
    to_set = {k: v for k, v in changes.items() if v is not None}
    to_unset = sorted(k for k, v in changes.items() if v is None)
    description = describe(list(to_set), to_unset)

    async def prepare(deploy_id: str) -> Work:
        return Work(release_work_subject(app),
                    ChangeConfig(deploy_id=deploy_id, app=app, set=to_set, unset=to_unset,
                                 created_by=call.principal.actor), "release")

    raw = body.model_dump_json().encode()
    accepted = await call.ctx.intake.submit(
        call.principal, app,
        DeploySpec(kind="config", source="config", description=description, supersedes=False,
                   prepare=prepare),
        idempotency_key=idempotency_key_of(call), fingerprint=fingerprint("config", app, raw),
    )
    call.deploy_id = accepted.deploy.id
    return json_response(deploy_view(accepted.deploy), status=202 if accepted.created else 200)


ROUTES = [
    RouteSpec("GET", "/v1/apps/{app}/config", get_config,
              "Config vars of the current release", responses={200: ConfigView}, tag="config"),
    RouteSpec("PATCH", "/v1/apps/{app}/config", patch_config,
              "Set (\"KEY\": \"value\") and unset (\"KEY\": null) config vars: a new release",
              role="deployer", body=ConfigPatch, responses={202: DeployView, 200: DeployView},
              headers=((IDEMPOTENCY_HEADER, "repeat the request safely for 24 h"),),
              action="config.update", tag="config"),
]
