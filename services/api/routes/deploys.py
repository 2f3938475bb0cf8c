"""/v1/apps/{app}/deploys and build logs: start a deploy, read its status and log."""

from __future__ import annotations

import asyncio
import re

import nats.js.errors
from aiohttp import web

from services.api.http_errors import UnsupportedMediaType, field_error
from services.api.idempotency import fingerprint
from services.api.models import DeployIn, DeployList, DeployView
from services.api.routing import Call, RouteSpec, json_response, parse_json
from services.api.source_deploys import Upload, submit_source_deploy
from services.api.views import deploy_view
from shared.bus.connection import UNAVAILABLE
from shared.errors import BackendUnavailable, NotFoundError
from shared.records import AppRecord, DeployRecord

UPLOAD_TYPES = frozenset({"application/gzip", "application/x-tar+gzip", "application/x-gzip"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500


def idempotency_key_of(call: Call) -> str | None:
    key = call.request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise field_error(IDEMPOTENCY_HEADER, "must be 1-255 printable ASCII characters")
    return key


def limit_of(call: Call) -> int:
    raw = call.request.query.get("limit")
    if raw is None:
        return DEFAULT_LIST_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise field_error("limit", f"must be an integer from 1 to {MAX_LIST_LIMIT}")
    return int(raw)


async def create_deploy(call: Call) -> web.StreamResponse:
    app = call.path_param("app")
    call.app = app
    key = idempotency_key_of(call)
    content_type = call.request.content_type
    upload: Upload | None = None
    if content_type in UPLOAD_TYPES:
        # Authorise before reading a possibly large body.
        await call.load_app("deployer")
        data = await call.read_body(call.settings.max_upload_bytes)
        if not data:
            raise field_error("body", "the uploaded tarball is empty")
        if data[:2] != b"\x1f\x8b":
            raise field_error("body", "the upload must be a gzip-compressed tarball")
        upload = Upload.of(data)
        body = DeployIn(image=None, git=None, description=None)
        fp = fingerprint("upload", app, upload.digest)
    elif content_type.startswith("multipart/"):
        raise UnsupportedMediaType(
            "send JSON ({\"image\": ...} or {\"git\": ...}) or a gzip tarball "
            "(Content-Type application/gzip)"
        )
    else:
        raw = await call.read_body(call.settings.max_body_bytes)
        body = parse_json(raw, DeployIn)
        fp = fingerprint("deploy", app, raw)
    accepted = await submit_source_deploy(call.ctx, call.principal, app, body, upload=upload,
                                          idempotency_key=key, fingerprint=fp)
    call.deploy_id = accepted.deploy.id
    call.team = None
    status = 202 if accepted.created else 200
    return json_response(deploy_view(accepted.deploy), status=status,
                         headers={"Location": f"/v1/apps/{app}/deploys/{accepted.deploy.id}"})


async def app_deploys(call: Call, app: AppRecord, limit: int) -> list[DeployRecord]:
    """The app's newest deploys first, from the app record's `recent_deploys` (never a
    scan of the deploy bucket; records written before that field existed list fewer).

    Automatic rollbacks are created by the scheduler, not accepted here: each one is
    listed beside the failed deploy that links it (`rollback.deploy_id`).
    """
    name = app.spec.name
    ids = app.recent_deploys[:limit]
    found = [e.value for e in await asyncio.gather(*(call.ctx.deploys.get(i) for i in ids))
             if e is not None and e.value.app == name]
    linked = {d.rollback.deploy_id for d in found
              if d.rollback is not None and d.rollback.deploy_id} - set(ids)
    found += [e.value for e in await asyncio.gather(*(call.ctx.deploys.get(i)
                                                      for i in sorted(linked)))
              if e is not None and e.value.app == name]
    found.sort(key=lambda d: (d.created_at, d.id), reverse=True)
    return found[:limit]


async def list_deploys(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    limit = limit_of(call)
    deploys = await app_deploys(call, entry.value, limit)
    return json_response(DeployList(deploys=[deploy_view(d) for d in deploys]))


async def get_deploy(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    deploy_id = call.path_param("id")
    found = await call.ctx.deploys.get(deploy_id) if _valid_key(deploy_id) else None
    if found is None or found.value.app != entry.value.spec.name:
        raise NotFoundError(f"deploy {deploy_id} does not exist")
    return json_response(deploy_view(found.value))


async def build_log(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    build_id = call.path_param("id")
    if not _valid_key(build_id):
        raise NotFoundError(f"build {build_id} does not exist")
    name = f"{entry.value.spec.name}/{build_id}"
    try:
        result = await call.ctx.build_logs.get(name)
    except nats.js.errors.ObjectNotFoundError:
        raise NotFoundError(f"build {build_id} has no log yet") from None
    except nats.js.errors.ObjectDeletedError:
        raise NotFoundError(f"build {build_id} has no log") from None
    except UNAVAILABLE as exc:
        raise BackendUnavailable("nats", f"reading the build log failed: {exc!r}") from exc
    return web.Response(body=result.data or b"", content_type="text/plain", charset="utf-8")


def _valid_key(value: str) -> bool:
    return bool(re.match(r"^[A-Za-z0-9_-]{1,128}$", value))


ROUTES = [
    RouteSpec(
        "POST", "/v1/apps/{app}/deploys", create_deploy,
        "Start a deploy from an image, a git ref or an uploaded gzip tarball",
        role="deployer", body=DeployIn,
        body_alternatives={"application/gzip": "a gzip tarball of the source directory"},
        responses={202: DeployView, 200: DeployView},
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
        headers=((IDEMPOTENCY_HEADER, "repeat a request safely for 24 h: the first deploy "
                  "is returned (200) instead of a new one"),),
        action="deploy.create", tag="deploys",
    ),
    RouteSpec("GET", "/v1/apps/{app}/deploys", list_deploys, "The app's deploys, newest first",
              responses={200: DeployList}, tag="deploys",
              query=(("limit", "integer", "at most this many (1-500, default 50; an app "
                                 "keeps its last 100)"),)),
    RouteSpec("GET", "/v1/apps/{app}/deploys/{id}", get_deploy, "A deploy's status and outcome",
              responses={200: DeployView}, tag="deploys"),
    RouteSpec("GET", "/v1/apps/{app}/builds/{id}/log", build_log,
              "A build's log as text (the build id is the deploy id)",
              responses={200: None}, tag="deploys"),
]
