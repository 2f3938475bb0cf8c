"""/v1/tokens: create (the secret is shown once), list (never the secret), revoke."""

from __future__ import annotations

from aiohttp import web

from services.api.auth import ALL_TEAMS, TokenRecord
from services.api.http_errors import Forbidden
from services.api.models import TokenCreate, TokenCreated, TokenList, TokenView
from services.api.routing import Call, RouteSpec, json_response
from shared.errors import NotFoundError


def token_view(record: TokenRecord) -> TokenView:
    return TokenView(id=record.id, name=record.name, role=record.role, teams=list(record.teams),
                     created_at=record.created_at, created_by=record.created_by,
                     expires_at=record.expires_at)


async def create_token(call: Call) -> web.StreamResponse:
    body = await call.json_body(TokenCreate)
    principal = call.principal
    # A team admin hands out tokens for its own teams only, never a wider scope.
    for team in body.teams:
        if not principal.covers(team) or (team == ALL_TEAMS and not principal.all_teams):
            raise Forbidden(f"this token may not grant access to team {team}")
    token, record = await call.ctx.tokens.create(
        name=body.name, role=body.role, teams=body.teams, created_by=principal.actor,
        expires_in_s=body.expires_in_s,
    )
    call.target = record.id
    view = token_view(record)
    return json_response(TokenCreated(**view.model_dump(), token=token), status=201)


def _visible(call: Call, record: TokenRecord) -> bool:
    return call.principal.all_teams or all(call.principal.covers(t) for t in record.teams)


async def list_tokens(call: Call) -> web.StreamResponse:
    records = [r for r in await call.ctx.tokens.list() if _visible(call, r)]
    return json_response(TokenList(tokens=[token_view(r) for r in records]))


async def revoke_token(call: Call) -> web.StreamResponse:
    token_id = call.path_param("id")
    call.target = token_id
    records = {r.id: r for r in await call.ctx.tokens.list()}
    record = records.get(token_id)
    if record is None or not _visible(call, record):
        raise NotFoundError(f"token {token_id} does not exist")
    revoked = await call.ctx.tokens.revoke(token_id)
    return json_response(token_view(revoked))


ROUTES = [
    RouteSpec("POST", "/v1/tokens", create_token, "Create a token (its secret is shown once)",
              role="admin", body=TokenCreate, responses={201: TokenCreated},
              action="token.create", tag="tokens"),
    RouteSpec("GET", "/v1/tokens", list_tokens, "List tokens (never their secrets)",
              role="admin", responses={200: TokenList}, tag="tokens"),
    RouteSpec("DELETE", "/v1/tokens/{id}", revoke_token,
              "Revoke a token; effective on its next request", role="admin",
              responses={200: TokenView}, action="token.revoke", tag="tokens"),
]
