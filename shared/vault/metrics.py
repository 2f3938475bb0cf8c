"""Prometheus metrics of the Vault/OpenBao port: every HTTP call, by operation and outcome.

Defined once per process at import (prometheus_client's default registry, served on
/metrics by shared.service). One call is one HTTP request to Vault: a secrets write is a
read, a CAS write and, for a new app, a metadata write, and a lost CAS repeats the first
two. Labels are bounded: `operation` is one of `Operation` (never a path or an app name),
`outcome` one of `OUTCOMES`, the same set as shared.nomad.metrics.

`track(operation)` times a block that makes one hvac call and counts its outcome from the
exception hvac or requests raised, so code that calls hvac itself can be counted the same
way (`VaultClient` does; the builder's credential reads, services/builder/credentials.py,
do not yet). The outcome is decided here from the HTTP status hvac's exception stands for,
not from shared.errors, so it needs no mapping from the caller.

Not here: values, paths or tokens, which never become labels.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import hvac.exceptions as hvac_exc
import requests
from prometheus_client import Counter, Histogram

Operation = Literal[
    "read_secret",  # KV v2 read of the latest version (VaultClient, every public method)
    "write_secret",  # KV v2 check-and-set write
    "set_max_versions",  # KV v2 metadata write, once per new app
    "health",  # sys/health, for /healthz
    "read_credential",  # the builder's own credentials (once it is wired in)
]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)

Outcome = Literal[
    "ok",
    "not_found",  # 404 without an error text (KV v2: nothing written at that path)
    "conflict",  # a lost KV v2 check-and-set
    "client_error",  # 400/401/403/405, a 404 naming no route (the mount is missing)
    "server_error",  # Vault answered but could not do it: 5xx (sealed: 503), 429, 412
    "unavailable",  # no answer: connection refused or reset, timeout
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

REQUESTS = Counter(
    "shaman_vault_requests_total",
    "HTTP calls to Vault/OpenBao, by operation and outcome (a CAS retry counts again).",
    ["operation", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "shaman_vault_request_seconds",
    "Duration of one HTTP call to Vault/OpenBao.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_CLIENT_ERRORS = (
    hvac_exc.InvalidRequest,
    hvac_exc.Unauthorized,
    hvac_exc.Forbidden,
    hvac_exc.UnsupportedOperation,
    hvac_exc.ParamValidationError,  # raised by hvac before sending: our request was wrong
)


def declare(operations: Iterable[Operation]) -> None:
    """Create the operations' series at 0, so a first failure is an increase too
    (`increase()` cannot see a series that appears already at 1)."""
    for operation in operations:
        for outcome in OUTCOMES:
            REQUESTS.labels(operation, outcome)


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome of an hvac call that raised `exc` (an hvac VaultError or a requests error)."""
    if isinstance(exc, requests.RequestException):
        return "unavailable"
    if isinstance(exc, hvac_exc.InvalidPath):
        # KV v2 answers a missing secret with an empty error list; a text ("no handler
        # for route") means the mount itself is missing: a configuration error.
        return "client_error" if exc.errors else "not_found"
    if isinstance(exc, hvac_exc.InvalidRequest) and "check-and-set" in str(exc.errors or ""):
        return "conflict"
    if isinstance(exc, _CLIENT_ERRORS):
        return "client_error"
    return "server_error"


def outcome_for_status(status: int) -> Outcome:
    """The outcome of an answer hvac returned instead of raising (sys/health does)."""
    if status < 400:
        return "ok"
    if status == 404:
        return "not_found"
    if status < 500 and status != 429:
        return "client_error"
    return "server_error"


def observe(operation: Operation, outcome: Outcome, seconds: float) -> None:
    REQUESTS.labels(operation, outcome).inc()
    REQUEST_SECONDS.labels(operation).observe(seconds)


@contextmanager
def track(operation: Operation) -> Iterator[None]:
    """Time the block (one hvac call) and count it: `ok`, or the outcome of what it raised."""
    started = time.perf_counter()
    try:
        yield
    except (hvac_exc.VaultError, requests.RequestException) as exc:
        observe(operation, outcome_of(exc), time.perf_counter() - started)
        raise
    observe(operation, "ok", time.perf_counter() - started)
