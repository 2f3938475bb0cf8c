"""GET /v1/openapi.json, generated from the route table and its pydantic models.

The request models here are the ones the handlers validate with and the response
models the ones they serialise with, so the spec documents exactly what runs: every
route, body, response and error (the JSON error body for each 4xx/5xx it can return).
The web UI's static files (`GET /`, `GET /ui/{path}`, tag `ui`, no token) are described
here too. Built once per process and served as bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from services.api.models import ErrorBody, HealthzView
from services.api.routing import RouteSpec
from services.api.ui.shell import ASSETS, PAGE

_PARAM = re.compile(r"\{(\w+)\}")
_ERROR_TEXT = {
    400: "Malformed request (e.g. not JSON), with the field named",
    401: "Missing, invalid, expired or revoked token",
    403: "The token's role may not do this",
    404: "No such app (or not visible to this token's teams), deploy, release or token",
    409: "Already exists, or a request with the same Idempotency-Key is in progress",
    413: "Body too large",
    415: "Unsupported content type",
    422: "Validation failed; details name each field",
    429: "Rate limited; see Retry-After",
    500: "Internal error (no internals in the body)",
    503: "NATS or Vault unavailable; see Retry-After",
}
_PATH_DOC = {
    "app": "app name (a DNS label)",
    "id": "deploy id (also the build id) or token id",
    "version": "release number (3 or v3)",
    "key": "secret name",
}


def build_openapi(routes: list[RouteSpec], version: str = "0.1.0") -> dict[str, Any]:
    models: list[type[BaseModel]] = [ErrorBody, HealthzView]
    for r in routes:
        if r.body is not None:
            models.append(r.body)
        models.extend(m for m in r.responses.values() if m is not None)
    unique = list(dict.fromkeys(models))
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in unique), *((m, "serialization") for m in unique)
    ]
    key_map, schema = models_json_schema(
        pairs, ref_template="#/components/schemas/{model}"  # type: ignore[arg-type]
    )

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(key_map[(model, mode)])

    error_ref = ref(ErrorBody, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": _operation_id(r),
            "tags": [r.tag],
            "security": [{"bearer": []}],
            "parameters": [],
            "responses": {},
        }
        for name in _PARAM.findall(r.path):
            op["parameters"].append({"name": name, "in": "path", "required": True,
                                     "description": _PATH_DOC.get(name, name),
                                     "schema": {"type": "string"}})
        for name, typ, doc in r.query:
            op["parameters"].append({"name": name, "in": "query", "required": False,
                                     "description": doc, "schema": {"type": typ}})
        for name, doc in r.headers:
            op["parameters"].append({"name": name, "in": "header", "required": False,
                                     "description": doc, "schema": {"type": "string"}})
        if r.body is not None:
            content: dict[str, Any] = {"application/json": {"schema": ref(r.body, "validation")}}
            for ctype, doc in r.body_alternatives.items():
                content[ctype] = {"schema": {"type": "string", "format": "binary",
                                             "description": doc}}
            op["requestBody"] = {"required": True, "content": content}
        for status, model in sorted(r.responses.items()):
            if model is None:
                media = "text/event-stream" if r.stream else "text/plain"
                op["responses"][str(status)] = {"description": "OK", "content": {
                    media: {"schema": {"type": "string"}}}}
            else:
                op["responses"][str(status)] = {
                    "description": model.__doc__.strip().splitlines()[0] if model.__doc__
                    else model.__name__,
                    "content": {"application/json": {"schema": ref(model, "serialization")}},
                }
        for status in (*r.errors, 500):
            if status == 413 and r.body is None:
                continue
            entry: dict[str, Any] = {"description": _ERROR_TEXT.get(status, "Error"),
                                     "content": {"application/json": {"schema": error_ref}}}
            if status in (429, 503):
                entry["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                    "description": "seconds to wait"}}
            op["responses"][str(status)] = entry
        paths.setdefault(r.path, {})[r.method.lower()] = op
    paths["/healthz"] = {"get": {
        "summary": "Liveness: NATS connected", "operationId": "healthz", "tags": ["ops"],
        "security": [],
        "responses": {
            "200": {"description": "healthy", "content": {"application/json": {
                "schema": ref(HealthzView, "serialization")}}},
            "503": {"description": "a check failed", "content": {"application/json": {
                "schema": ref(HealthzView, "serialization")}}},
        },
    }}
    paths["/metrics"] = {"get": {
        "summary": "Prometheus metrics", "operationId": "metrics", "tags": ["ops"],
        "security": [],
        "responses": {"200": {"description": "metrics", "content": {
            "text/plain": {"schema": {"type": "string"}}}}},
    }}
    paths["/v1/openapi.json"] = {"get": {
        "summary": "This document", "operationId": "openapi", "tags": ["ops"], "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {
            "application/json": {"schema": {"type": "object"}}}}},
    }}
    paths.update(_ui_paths(error_ref))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Shaman API", "version": version,
                 "description": "Deploy apps to Nomad: apps, deploys, releases, config, "
                                "secrets, rollback, scale, events (SSE), tokens, audit."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ui_paths(error_ref: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The web UI's static files (services/api/ui): no token, conditional GETs."""
    not_modified = {"description": "Not modified (If-None-Match matched the ETag)"}
    cache_headers = {
        "ETag": {"schema": {"type": "string"}, "description": "the content's version"},
        "Cache-Control": {"schema": {"type": "string"},
                          "description": "immutable for a versioned asset, else no-cache"},
    }
    if_none_match = {"name": "If-None-Match", "in": "header", "required": False,
                     "description": "an ETag from an earlier answer: 304 if unchanged",
                     "schema": {"type": "string"}}
    asset_types = sorted({ctype.split(";")[0] for name, ctype in ASSETS.items() if name != PAGE})
    return {
        "/": {"get": {
            "summary": "The web UI's page (holds no data; it asks for a token)",
            "operationId": "get_ui_page", "tags": ["ui"], "security": [],
            "parameters": [if_none_match],
            "responses": {
                "200": {"description": "the page", "headers": cache_headers,
                        "content": {"text/html": {"schema": {"type": "string"}}}},
                "304": not_modified,
            },
        }},
        "/ui/{path}": {"get": {
            "summary": "A static asset of the web UI (script, style sheet)",
            "operationId": "get_ui_asset", "tags": ["ui"], "security": [],
            "parameters": [
                {"name": "path", "in": "path", "required": True,
                 "description": "the asset's file name, e.g. app.js",
                 "schema": {"type": "string"}},
                {"name": "v", "in": "query", "required": False,
                 "description": "the asset's content version (as the page names it): "
                                "then the answer may be cached for a year",
                 "schema": {"type": "string"}},
                if_none_match,
            ],
            "responses": {
                "200": {"description": "the asset", "headers": cache_headers,
                        "content": {t: {"schema": {"type": "string"}} for t in asset_types}},
                "304": not_modified,
                "404": {"description": "No such asset",
                        "content": {"application/json": {"schema": error_ref}}},
            },
        }},
    }


def _operation_id(r: RouteSpec) -> str:
    words = re.sub(r"[{}]", "", r.path).strip("/").replace("/", "_").replace("-", "_")
    return f"{r.method.lower()}_{words}"


def render(routes: list[RouteSpec]) -> bytes:
    return json.dumps(build_openapi(routes), separators=(",", ":")).encode()
