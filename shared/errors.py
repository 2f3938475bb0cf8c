"""The error types every Shaman component raises and handles.

Three questions decide what happens to a failure, and these types answer them once:
will retrying help (`TemporaryError` and its subclasses, `ConflictError`), will it never
succeed (`PermanentError`, `ValidationFailed`), or is it a plain answer (`NotFoundError`)?
The bus runtime maps them to ack / nak(delay) / term; the API maps them to an HTTP status
and the JSON error body of architecture.md §5 (`to_body()`), using the `code` and
`http_status` hints carried by each class.

Messages are written for the person who has to act on them ("Nomad is unreachable at …:
check NOMAD_ADDR"), and never embed a secret value: callers pass names, paths and
versions, never values. This module does not log, retry or translate library
exceptions; the ports (shared.nomad, shared.vault, shared.bus) do the translating.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypedDict

__all__ = [
    "BackendUnavailable",
    "ConflictError",
    "FieldError",
    "NotFoundError",
    "PermanentError",
    "SecretsUnavailable",
    "ShamanError",
    "TemporaryError",
    "ValidationFailed",
    "is_retryable",
]


class ShamanError(Exception):
    """Base of every error Shaman raises on purpose.

    `code` is a stable machine string for API error bodies; `http_status` is the status
    the API should answer with; `retryable` says whether the same operation may succeed
    later without anyone changing anything.
    """

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def details(self) -> Any | None:
        """Structured details for the API body, or None."""
        return None

    def to_body(self) -> dict[str, Any]:
        """The JSON error body of architecture.md §5: `{"error": {code, message, details?}}`."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        details = self.details()
        if details is not None:
            error["details"] = details
        return {"error": error}


class TemporaryError(ShamanError):
    """Retry later: a network failure, a timeout, a 5xx, a leader election.

    `retry_after_s` is the server's hint (a Retry-After header) or None to let the
    caller's backoff decide.
    """

    code: ClassVar[str] = "temporarily_unavailable"
    http_status: ClassVar[int] = 503
    retryable: ClassVar[bool] = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendUnavailable(TemporaryError):
    """A dependency (NATS, Nomad, Vault) cannot be reached or cannot confirm a write.

    The API answers 503 with Retry-After; a worker naks with a delay. `component` names
    the dependency ("nats", "nomad", "vault") so operators know where to look.
    """

    code: ClassVar[str] = "backend_unavailable"

    def __init__(
        self, component: str, detail: str = "", *, retry_after_s: float | None = None
    ) -> None:
        message = f"{component} is unavailable" + (f": {detail}" if detail else "")
        super().__init__(message, retry_after_s=retry_after_s)
        self.component = component
        self.detail = detail


class SecretsUnavailable(BackendUnavailable):
    """The secrets backend (Vault/OpenBao) cannot be reached, is sealed or is down.

    The message starts with `secrets backend unavailable:` and never carries a value.
    """

    code: ClassVar[str] = "secrets_unavailable"

    def __init__(self, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__("vault", detail, retry_after_s=retry_after_s)
        # BackendUnavailable's generic wording is replaced by the one users search for.
        self.message = f"secrets backend unavailable: {detail}"
        self.args = (self.message,)


class PermanentError(ShamanError):
    """The operation will never succeed as asked: bad input, a rejected spec, a poison message.

    `reason` is the one-line explanation recorded with the outcome (a termed message's
    dead-letter record, a deploy's `reason`). `message` defaults to it.
    """

    code: ClassVar[str] = "unprocessable"
    http_status: ClassVar[int] = 422

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message if message is not None else reason)
        self.reason = reason


class FieldError(TypedDict):
    """One problem with one field: `loc` is a dotted path (`health.path`, `domains.0`)."""

    loc: str
    msg: str


def _loc_to_str(loc: str | int | Sequence[str | int]) -> str:
    if isinstance(loc, str | int):
        return str(loc)
    return ".".join(str(part) for part in loc)


class ValidationFailed(PermanentError):
    """Input failed validation; `errors` says where and what, one item per problem.

    Messages describe the rule that failed ("must be a DNS label"), never the value given:
    the value may be a secret someone pasted into the wrong field.
    """

    code: ClassVar[str] = "validation_failed"
    http_status: ClassVar[int] = 400

    def __init__(self, errors: Iterable[FieldError], message: str | None = None) -> None:
        self.errors: list[FieldError] = [FieldError(loc=e["loc"], msg=e["msg"]) for e in errors]
        if message is None:
            message = "; ".join(f"{e['loc']}: {e['msg']}" for e in self.errors) or "invalid input"
        super().__init__(message)

    @classmethod
    def field(cls, loc: str | Sequence[str | int], msg: str) -> ValidationFailed:
        """One error at one place: `ValidationFailed.field("health.path", "must start with /")`."""
        return cls([FieldError(loc=_loc_to_str(loc), msg=msg)])

    @classmethod
    def from_pydantic(cls, exc: Any) -> ValidationFailed:
        """Convert a `pydantic.ValidationError`, keeping only locations and messages.

        Pydantic's error items also carry `input` (the offending value); it is dropped
        on purpose, because it can be a secret.
        """
        items = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            items.append(FieldError(loc=_loc_to_str(err.get("loc", ())) or "body", msg=err["msg"]))
        return cls(items)

    def details(self) -> list[FieldError]:
        return list(self.errors)


class ConflictError(ShamanError):
    """A compare-and-set lost: a KV revision or a Nomad EnforceIndex moved underneath us.

    Retryable after re-reading the current state; never by blindly repeating the write.
    `expected` / `actual` are the revisions or indexes involved, when known.
    """

    code: ClassVar[str] = "conflict"
    http_status: ClassVar[int] = 409
    retryable: ClassVar[bool] = True

    def __init__(
        self, message: str, *, expected: int | None = None, actual: int | None = None
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class NotFoundError(ShamanError):
    """The thing asked for does not exist (an app, a release, a Nomad job, a secret key)."""

    code: ClassVar[str] = "not_found"
    http_status: ClassVar[int] = 404


def is_retryable(exc: BaseException) -> bool:
    """True when repeating the operation later may succeed without anyone changing anything."""
    return isinstance(exc, ShamanError) and exc.retryable
