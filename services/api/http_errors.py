"""How failures become HTTP answers: the JSON error body, statuses and Retry-After.

Every error the API returns is `{"error": {"code", "message", "details"?}}` (architecture
§5). Shaman's own errors (shared.errors) carry their code and status; the few that only
HTTP knows (401, 403, 413, 429, 400 for unparseable JSON) are defined here. NATS or
Vault trouble becomes 503 with `Retry-After`; anything unexpected becomes a 500 whose
body says nothing about internals (the log line has the traceback).

This module does not decide who may do what (auth) or what is valid (models).
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web

from shared.errors import FieldError, ShamanError, TemporaryError, ValidationFailed

DEFAULT_RETRY_AFTER_S = 2


class RequestInvalid(ValidationFailed):
    """Well-formed JSON that breaks the schema: 422 with one item per field problem."""

    http_status: ClassVar[int] = 422


class InvalidJson(ShamanError):
    code: ClassVar[str] = "invalid_json"
    http_status: ClassVar[int] = 400

    def details(self) -> Any:
        return [{"loc": "body", "msg": self.message}]


class Unauthorized(ShamanError):
    code: ClassVar[str] = "unauthorized"
    http_status: ClassVar[int] = 401


class Forbidden(ShamanError):
    code: ClassVar[str] = "forbidden"
    http_status: ClassVar[int] = 403


class PayloadTooLarge(ShamanError):
    code: ClassVar[str] = "payload_too_large"
    http_status: ClassVar[int] = 413


class UnsupportedMediaType(ShamanError):
    code: ClassVar[str] = "unsupported_media_type"
    http_status: ClassVar[int] = 415


class RateLimited(ShamanError):
    code: ClassVar[str] = "rate_limited"
    http_status: ClassVar[int] = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyBuilds(RateLimited):
    """The team's cap on concurrent builds is reached (SHAMAN_TEAM_BUILD_CAP)."""

    code: ClassVar[str] = "too_many_builds"


class AlreadyExists(ShamanError):
    code: ClassVar[str] = "already_exists"
    http_status: ClassVar[int] = 409


class InProgress(ShamanError):
    """Another request with the same Idempotency-Key is being handled right now."""

    code: ClassVar[str] = "in_progress"
    http_status: ClassVar[int] = 409


def field_error(loc: str, msg: str) -> RequestInvalid:
    return RequestInvalid([FieldError(loc=loc, msg=msg)])


def error_response(
    status: int, code: str, message: str, details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)


def shaman_error_response(exc: ShamanError) -> web.Response:
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(exc, TemporaryError | RateLimited):
        headers["Retry-After"] = str(max(1, round(retry_after or DEFAULT_RETRY_AFTER_S)))
    elif isinstance(exc, InProgress):
        headers["Retry-After"] = "1"
    status = exc.http_status
    body = exc.to_body()
    if isinstance(exc, TemporaryError):
        # The detail of a backend failure (hosts, library exception texts) is for the
        # log, not for the caller.
        component = getattr(exc, "component", None)
        what = "the secrets backend" if component == "vault" else component or "a backend"
        body = {"error": {"code": exc.code, "message": f"{what} is unavailable; retry later"}}
        status = 503
    return web.json_response(body, status=status, headers=headers)
