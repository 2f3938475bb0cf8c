"""The HTTP routes, one module per resource; `all_routes()` is the whole table."""

from __future__ import annotations

from services.api.routes import apps as apps_routes
from services.api.routes import audit as audit_routes
from services.api.routes import config as config_routes
from services.api.routes import deploys as deploys_routes
from services.api.routes import events as events_routes
from services.api.routes import logs as logs_routes
from services.api.routes import releases as releases_routes
from services.api.routes import secrets as secrets_routes
from services.api.routes import tokens as tokens_routes
from services.api.routing import RouteSpec


def all_routes() -> list[RouteSpec]:
    return [
        *apps_routes.ROUTES,
        *deploys_routes.ROUTES,
        *logs_routes.ROUTES,
        *releases_routes.ROUTES,
        *config_routes.ROUTES,
        *secrets_routes.ROUTES,
        *events_routes.ROUTES,
        *tokens_routes.ROUTES,
        *audit_routes.ROUTES,
    ]
