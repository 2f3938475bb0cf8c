"""Nomad's failures translated into shared.errors, decided in one place.

Nomad answers most failures with HTTP 500 and a plain-text body (nomad-api.md §10), so
the status alone cannot tell "the leader is being elected" from "your job is invalid".
The rules, in order:

- 500 whose text starts with `Enforcing job modify index` → `ConflictError` (a CAS lost);
- 500 that names a cluster problem (`No cluster leader`, `rpc error`, ...) → `TemporaryError`;
- 404, and the 500 `... not found` of write endpoints → `NotFoundError`;
- 400, 403, other 4xx, and 500s that read like a validation or state error
  (`validation failed`, `N error(s) occurred`, `cannot update job`, `terminal deployment`,
  `nonexistent namespace`, ...) → `PermanentError` carrying Nomad's text;
- 429 and every other 5xx, connection errors and timeouts → `TemporaryError`
  (`BackendUnavailable("nomad")` when Nomad could not be reached at all). An unknown 500
  is temporary: a wrong "permanent" would fail a deploy that a retry would have fixed.

Used by the python-nomad wrapper (shared.nomad.client) and the aiohttp event-stream
reader (shared.nomad.event_stream). It does no I/O.
"""

from __future__ import annotations

import re

import requests
from nomad.api import exceptions as nomad_exc

from shared.errors import (
    BackendUnavailable,
    ConflictError,
    NotFoundError,
    PermanentError,
    ShamanError,
    TemporaryError,
)

__all__ = ["error_for_status", "map_nomad_exception", "parse_retry_after"]

# Nomad error texts are usually one line; a multierror for a large job can be long.
_MAX_TEXT = 2000

_CAS = re.compile(r"^\s*Enforcing job modify index (\d+)(?:.*?index: (\d+))?", re.DOTALL)
_NOT_FOUND = re.compile(
    r"\b(job|deployment|alloc|allocation|eval|evaluation)\b.*\bnot found\b", re.I
)
# 500 texts that are about the request or the object, not the server's health.
_PERMANENT_500 = re.compile(
    r"validation failed|error\(s\) occurred|errors? occurred:|cannot update job|"
    r"nonexistent namespace|mismatched request namespace|terminal deployment|"
    r"does not match|must be specified|hasn't been provided|invalid|"
    r"can't (?:promote|fail|pause|resume|set health)|no canaries to promote|"
    r"not have a deployment|periodic|parameterized|unsupported|"
    r"not allowed|exceeds|out of range",
    re.I,
)
# ...unless the text says the cluster itself is unhealthy, which wins: these are checked
# first, and are specific enough not to match a validation text about a `*_timeout` field.
_TEMPORARY_500 = re.compile(
    r"no cluster leader|no path to region|rpc error|raft|leadership lost|not the leader|"
    r"deadline exceeded|connection refused|connection reset|i/o timeout|broken pipe|"
    r"too many requests|rate limit|server unavailable|please retry",
    re.I,
)


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is not used by Nomad)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_for_status(
    status: int, text: str, op: str, *, retry_after_s: float | None = None
) -> ShamanError:
    """The shared error for a non-2xx Nomad answer to operation `op` (e.g. `register job web`)."""
    body = _clip(text)
    if status == 500 and (m := _CAS.match(body)):
        expected = int(m.group(1))
        actual = int(m.group(2)) if m.group(2) else None
        return ConflictError(
            f"nomad {op}: job changed since it was read ({body}); re-read and try again",
            expected=expected,
            actual=actual,
        )
    if status == 404:
        return NotFoundError(f"nomad {op}: {body or 'not found'}")
    if status == 403:
        return PermanentError(
            f"nomad {op}: permission denied ({body}); check NOMAD_TOKEN and its ACL policy"
        )
    if status == 409:
        return ConflictError(f"nomad {op}: {body}")
    if status == 429:
        return TemporaryError(f"nomad {op}: rate limited ({body})", retry_after_s=retry_after_s)
    if 400 <= status < 500:
        return PermanentError(f"nomad rejected {op}: {body}")
    if status == 500 and not _TEMPORARY_500.search(body):
        if _NOT_FOUND.search(body):
            return NotFoundError(f"nomad {op}: {body}")
        if _PERMANENT_500.search(body):
            return PermanentError(f"nomad rejected {op}: {body}")
    return TemporaryError(
        f"nomad {op} failed with HTTP {status}: {body}", retry_after_s=retry_after_s
    )


def map_nomad_exception(exc: BaseException, op: str) -> ShamanError:
    """Translate an exception raised by python-nomad (or requests under it)."""
    if isinstance(exc, ShamanError):
        return exc
    resp = getattr(exc, "nomad_resp", None)
    if isinstance(resp, requests.Response):
        return error_for_status(
            resp.status_code,
            resp.text or "",
            op,
            retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
        )
    # python-nomad wraps transport errors: the underlying requests exception sits in
    # nomad_resp (BaseNomadException) or is the exception itself (TimeoutNomadException).
    cause = resp if isinstance(resp, BaseException) else exc
    if isinstance(cause, requests.Timeout | nomad_exc.TimeoutNomadException):
        return TemporaryError(f"nomad {op} timed out: {type(cause).__name__}")
    if isinstance(cause, requests.ConnectionError):
        return BackendUnavailable("nomad", f"{op}: cannot connect ({_clip(str(cause))})")
    if isinstance(cause, requests.RequestException):
        return TemporaryError(f"nomad {op} failed: {type(cause).__name__}: {_clip(str(cause))}")
    if isinstance(cause, ValueError):
        # A 2xx body that is not JSON: a proxy's error page or a truncated answer.
        return TemporaryError(f"nomad {op}: unreadable response ({type(cause).__name__})")
    return TemporaryError(f"nomad {op} failed: {type(cause).__name__}: {_clip(str(cause))}")
