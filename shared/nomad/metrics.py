"""Prometheus metrics of the Nomad port: every HTTP call `NomadClient` makes, by outcome.

Defined once per process at import (prometheus_client's default registry, served on
/metrics by shared.service), so every service that uses `NomadClient` exports them. One
call is one HTTP request: a read retried three times counts three times. Labels are
bounded: `operation` is the `NomadClient` method's name (`OPERATIONS`), never a job,
deployment or allocation id; `outcome` is one of `OUTCOMES`.

Not here: the event stream. Its subscriptions are counted by the watcher, which owns the
only one (`shaman_watcher_stream_*`, services/watcher/metrics.py).
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter, Histogram

from shared.errors import ConflictError, NotFoundError, PermanentError, ShamanError

Operation = Literal[
    "get_job",
    "list_jobs",
    "plan_job",
    "validate_job",
    "register_job",
    "deregister_job",
    "get_versions",
    "get_job_allocations",
    "get_latest_deployment",
    "get_job_deployments",
    "list_deployments",
    "get_deployment",
    "get_deployment_allocations",
    "fail_deployment",
    "promote_deployment",
    "get_allocation",
    "get_allocation_checks",
    "read_task_log",
    "get_service",
    "status_leader",
    "ping",
]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)

Outcome = Literal[
    "ok",
    "not_found",  # 404, or a write's "... not found" 500 (a read returns None / [] for it)
    "conflict",  # a lost EnforceIndex, or a 409
    "client_error",  # Nomad refused the request: 400/403/4xx, or a 500 naming a bad job
    "server_error",  # Nomad answered but could not do it now: other 5xx, 429, an unreadable body
    "unavailable",  # no answer: connection refused or reset, timeout
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

REQUESTS = Counter(
    "shaman_nomad_requests_total",
    "HTTP calls to Nomad's API by NomadClient, by operation and outcome (retries count each).",
    ["operation", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "shaman_nomad_request_seconds",
    "Duration of one HTTP call to Nomad's API by NomadClient (not the wait for a thread).",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def declare() -> None:
    """Create every (operation, outcome) series at 0, so a first failure is an increase
    too (`increase()` cannot see a series that appears already at 1)."""
    for operation in OPERATIONS:
        for outcome in OUTCOMES:
            REQUESTS.labels(operation, outcome)


def outcome_of(error: ShamanError, *, answered: bool) -> Outcome:
    """The outcome of a failed call, from the error shared.nomad.errors mapped it to and
    whether Nomad answered at all (an HTTP status, or a body that did not parse)."""
    if isinstance(error, NotFoundError):
        return "not_found"
    if isinstance(error, ConflictError):
        return "conflict"
    if isinstance(error, PermanentError):
        return "client_error"
    return "server_error" if answered else "unavailable"


def observe(operation: Operation, outcome: Outcome, seconds: float) -> None:
    REQUESTS.labels(operation, outcome).inc()
    REQUEST_SECONDS.labels(operation).observe(seconds)
