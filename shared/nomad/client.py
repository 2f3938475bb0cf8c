"""The Nomad port: typed async calls over python-nomad, run off the event loop.

`NomadClient` is what the scheduler and the watcher use for Nomad's request/response
endpoints. python-nomad is synchronous (requests), so every call runs in a worker thread
(`asyncio.to_thread`); the event loop never blocks on Nomad. Failures come back as
shared.errors (see shared.nomad.errors for the rules): a lost EnforceIndex is a
`ConflictError`, a 404 is None / [] for reads, an invalid job is a `PermanentError` with
Nomad's text, anything transient is a `TemporaryError`.

Every HTTP call is counted and timed by operation (the method's name) and outcome in
shared.nomad.metrics (`shaman_nomad_requests_total`, `shaman_nomad_request_seconds`).

Reads are idempotent, so they are retried here (capped exponential backoff with jitter,
via tenacity) before a `TemporaryError` escapes. Writes are never retried here: only the
caller knows whether repeating one is safe (a register with EnforceIndex is; a
fail-deployment may not be).

python-nomad facts this module relies on (nomad-api.md §11): it injects `?namespace=`
only for paths starting with job(s)/allocation(s)/deployment(s)/client/..., so the
`service` and `validate` calls pass it explicitly here; `validate_job` returns the raw
`requests.Response`; a missing token falls back to $NOMAD_TOKEN. The event stream is not
read through python-nomad: see shared.nomad.event_stream.

Not here: rendering jobs, deciding what to register, blocking queries (python-nomad has
no `index`/`wait` support; the watcher gets change notifications from the event stream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar, cast

import nomad
import requests
from nomad.api import exceptions as nomad_exc
from nomad.api.base import Requester
from requests.adapters import HTTPAdapter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from shared.errors import NotFoundError, ShamanError, TemporaryError
from shared.logging import get_logger
from shared.nomad import metrics
from shared.nomad.errors import map_nomad_exception
from shared.nomad.metrics import Operation
from shared.tasks import capped_backoff

__all__ = ["JSON", "NomadClient", "NomadSettingsLike", "ReadRetry", "secret_value"]

log = get_logger(__name__)

T = TypeVar("T")
JSON = dict[str, Any]

# requests keeps at most this many idle connections per host; sized to the default
# thread pool so concurrent reads do not churn connections.
_POOL_SIZE = 32


class NomadSettingsLike(Protocol):
    """The fields of shared.settings.NomadSettings this port reads."""

    @property
    def nomad_addr(self) -> str: ...

    @property
    def nomad_token(self) -> Any: ...  # pydantic SecretStr | None

    @property
    def nomad_namespace(self) -> str: ...

    @property
    def nomad_timeout_s(self) -> float: ...


def secret_value(value: Any) -> str | None:
    """The plain string of a pydantic SecretStr (or a str); None when unset or empty."""
    if value is None:
        return None
    plain = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return plain or None


class ReadRetry:
    """How reads are retried: attempts, overall deadline and the backoff curve (seconds)."""

    def __init__(
        self,
        attempts: int = 4,
        deadline_s: float = 20.0,
        initial_s: float = 0.2,
        max_s: float = 5.0,
        jitter_s: float = 0.5,
    ) -> None:
        self.attempts = attempts
        self.deadline_s = deadline_s
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter_s = jitter_s


class _Service(Requester):  # type: ignore[misc]
    """GET /v1/service/:name, which python-nomad does not wrap."""

    ENDPOINT = "service"


def _log_retry(op: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "nomad read retry",
            op=op,
            attempt=state.attempt_number,
            sleep_s=round(state.upcoming_sleep, 3),
            error=str(exc),
        )

    return before_sleep


class NomadClient:
    """Async facade over python-nomad for one Nomad region and namespace.

    Construct it in `create_app` and push `aclose` on the exit stack (or use
    `async with`). Constructing opens no connection.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        namespace: str = "default",
        region: str | None = None,
        timeout_s: float = 10.0,
        verify: bool | str = True,
        read_retry: ReadRetry | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.read_retry = read_retry or ReadRetry()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_SIZE)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._nomad = nomad.Nomad(
            address=self.address,
            token=token or None,
            namespace=namespace,
            region=region,
            timeout=timeout_s,
            verify=verify,
            session=self._session,
        )
        self._service = _Service(**self._nomad.requester_settings)
        metrics.declare()

    @classmethod
    def from_settings(
        cls, settings: NomadSettingsLike, *, read_retry: ReadRetry | None = None
    ) -> NomadClient:
        """A client for NOMAD_ADDR / NOMAD_TOKEN / NOMAD_NAMESPACE as the settings read them."""
        return cls(
            settings.nomad_addr,
            token=secret_value(settings.nomad_token),
            namespace=settings.nomad_namespace,
            timeout_s=settings.nomad_timeout_s,
            read_retry=read_retry,
        )

    def __repr__(self) -> str:
        return f"NomadClient(address={self.address!r}, namespace={self.namespace!r})"

    async def aclose(self) -> None:
        await asyncio.to_thread(self._session.close)

    async def __aenter__(self) -> NomadClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plumbing ------------------------------------------------------------------

    # `operation` is the metric label (the public method's name); `op` is the text for
    # errors and logs, which may name the job.

    async def _once(self, operation: Operation, op: str, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._call, operation, op, fn)

    def _call(self, operation: Operation, op: str, fn: Callable[[], T]) -> T:
        """One HTTP call, in the worker thread: timed there (the wait for a free thread is
        not Nomad's time), counted by outcome, its failure mapped to shared.errors. A call
        whose caller was cancelled still ends here, so it is counted with its real outcome."""
        started = time.perf_counter()
        try:
            result = fn()
        except (nomad_exc.BaseNomadException, requests.RequestException, ValueError) as exc:
            error = map_nomad_exception(exc, op)
            # Nomad answered when python-nomad kept a response, or when a 2xx body did not
            # parse (ValueError); otherwise the request got no answer at all.
            answered = isinstance(getattr(exc, "nomad_resp", None), requests.Response) or (
                isinstance(exc, ValueError)
            )
            outcome = metrics.outcome_of(error, answered=answered)
            metrics.observe(operation, outcome, time.perf_counter() - started)
            raise error from exc
        # Any other exception is a bug here, not an answer of Nomad's: not counted.
        metrics.observe(operation, "ok", time.perf_counter() - started)
        return result

    async def _read(self, operation: Operation, op: str, fn: Callable[[], T]) -> T:
        policy = self.read_retry
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TemporaryError),
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline_s),
            wait=capped_backoff(policy.initial_s, policy.max_s, policy.jitter_s),
            before_sleep=_log_retry(op),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(operation, op, fn)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _read_or_none(self, operation: Operation, op: str, fn: Callable[[], T]) -> T | None:
        try:
            return await self._read(operation, op, fn)
        except NotFoundError:
            return None

    async def _write(self, operation: Operation, op: str, fn: Callable[[], T]) -> T:
        return await self._once(operation, op, fn)

    # -- jobs ----------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JSON | None:
        """The full job, or None when Nomad has no job with this ID (a stopped job is returned)."""
        return await self._read_or_none(
            "get_job", f"read job {job_id}", lambda: cast(JSON, self._nomad.job.get_job(job_id))
        )

    async def list_jobs(self, prefix: str = "") -> list[JSON]:
        """Job stubs whose ID starts with `prefix`."""
        return await self._read(
            "list_jobs",
            "list jobs",
            lambda: cast(list[JSON], self._nomad.jobs.get_jobs(prefix=prefix or None)),
        )

    async def plan_job(self, job_id: str, job: JSON) -> JSON:
        """Dry-run `job` (with diff). The answer's `JobModifyIndex` is the index to register
        against with EnforceIndex; `Diff.Type` is `None` when nothing would change."""
        return await self._read(
            "plan_job",
            f"plan job {job_id}",
            lambda: cast(JSON, self._nomad.job.plan_job(job_id, {"Job": job}, diff=True)),
        )

    async def validate_job(self, job: JSON) -> list[str]:
        """Server-side validation; the list of problems (empty when valid)."""

        def call() -> JSON:
            # python-nomad returns the raw Response here and does not add ?namespace=.
            resp = self._nomad.validate.request(
                "job", json={"Job": job}, params={"namespace": self.namespace}, method="post"
            )
            return cast(JSON, resp.json())

        body = await self._read("validate_job", f"validate job {job.get('ID', '?')}", call)
        errors = list(body.get("ValidationErrors") or [])
        if body.get("Error") and not errors:
            errors.append(str(body["Error"]))
        return errors

    async def register_job(self, job: JSON, enforce_index: int | None) -> JSON:
        """Register `job`; with `enforce_index` it is a check-and-set (0 = must not exist yet).

        Returns Nomad's answer (`EvalID`, `JobModifyIndex`, `Warnings`, `Index`).
        Raises ConflictError when the job moved since `enforce_index` was read.
        """
        job_id = str(job["ID"])
        body: JSON = {"Job": job}
        if enforce_index is not None:
            body["EnforceIndex"] = True
            body["JobModifyIndex"] = enforce_index
        return await self._write(
            "register_job",
            f"register job {job_id}",
            lambda: cast(JSON, self._nomad.job.register_job(job_id, body)),
        )

    async def deregister_job(self, job_id: str, *, purge: bool = False) -> JSON:
        """Stop the job (and purge it from Nomad's state when `purge`)."""
        return await self._write(
            "deregister_job",
            f"deregister job {job_id}",
            lambda: cast(JSON, self._nomad.job.deregister_job(job_id, purge=purge or None)),
        )

    async def get_versions(self, job_id: str) -> list[JSON]:
        """The job's stored versions, newest first; [] when the job does not exist."""

        def call() -> list[JSON]:
            body = self._nomad.job.get_versions(job_id)
            if isinstance(body, dict):
                return cast(list[JSON], body.get("Versions") or [])
            return cast(list[JSON], body or [])

        return (
            await self._read_or_none("get_versions", f"read versions of job {job_id}", call) or []
        )

    async def get_job_allocations(self, job_id: str, *, include_all: bool = False) -> list[JSON]:
        """Allocation stubs of the job ([] when the job does not exist)."""
        return (
            await self._read_or_none(
                "get_job_allocations",
                f"list allocations of job {job_id}",
                lambda: cast(
                    list[JSON],
                    self._nomad.job.get_allocations(job_id, all_=include_all or None),
                ),
            )
            or []
        )

    # -- deployments ----------------------------------------------------------------

    async def get_latest_deployment(self, job_id: str) -> JSON | None:
        """The job's most recent deployment, or None (no job, or never deployed)."""
        return await self._read_or_none(
            "get_latest_deployment",
            f"read latest deployment of job {job_id}",
            lambda: cast(JSON | None, self._nomad.job.get_deployment(job_id)),
        )

    async def get_job_deployments(self, job_id: str) -> list[JSON]:
        """All deployments of the job, newest first ([] when none)."""
        return (
            await self._read_or_none(
                "get_job_deployments",
                f"list deployments of job {job_id}",
                lambda: cast(list[JSON], self._nomad.job.get_deployments(job_id)),
            )
            or []
        )

    async def list_deployments(self, prefix: str = "") -> list[JSON]:
        """Every deployment in the namespace (ID prefix filter: an even number of hex chars)."""
        return await self._read(
            "list_deployments",
            "list deployments",
            lambda: cast(list[JSON], self._nomad.deployments.get_deployments(prefix=prefix)),
        )

    async def get_deployment(self, deployment_id: str) -> JSON | None:
        return await self._read_or_none(
            "get_deployment",
            f"read deployment {deployment_id}",
            lambda: cast(JSON, self._nomad.deployment.get_deployment(deployment_id)),
        )

    async def get_deployment_allocations(self, deployment_id: str) -> list[JSON]:
        return (
            await self._read_or_none(
                "get_deployment_allocations",
                f"list allocations of deployment {deployment_id}",
                lambda: cast(
                    list[JSON], self._nomad.deployment.get_deployment_allocations(deployment_id)
                ),
            )
            or []
        )

    async def fail_deployment(self, deployment_id: str) -> JSON:
        """Mark a running deployment failed (Nomad stops placing its allocations)."""
        return await self._write(
            "fail_deployment",
            f"fail deployment {deployment_id}",
            lambda: cast(JSON, self._nomad.deployment.fail_deployment(deployment_id)),
        )

    async def promote_deployment(self, deployment_id: str, groups: list[str] | None = None) -> JSON:
        """Promote the canaries of all task groups (or only `groups`)."""
        if groups is None:
            return await self._write(
                "promote_deployment",
                f"promote deployment {deployment_id}",
                lambda: cast(JSON, self._nomad.deployment.promote_deployment_all(deployment_id)),
            )
        return await self._write(
            "promote_deployment",
            f"promote deployment {deployment_id}",
            lambda: cast(
                JSON, self._nomad.deployment.promote_deployment_groups(deployment_id, groups)
            ),
        )

    # -- allocations, logs, services, status -----------------------------------------

    async def get_allocation(self, alloc_id: str) -> JSON | None:
        return await self._read_or_none(
            "get_allocation",
            f"read allocation {alloc_id}",
            lambda: cast(JSON, self._nomad.allocation.get_allocation(alloc_id)),
        )

    async def get_allocation_checks(self, alloc_id: str) -> dict[str, JSON]:
        """Nomad-provider check results of an allocation (check ID → result with `Output`),
        {} when the allocation is unknown or has no checks."""

        def call() -> dict[str, JSON]:
            # python-nomad has no wrapper; its allocation requester builds the path and
            # adds ?namespace= itself.
            resp = self._nomad.allocation.request(alloc_id, "checks", method="get")
            return cast(dict[str, JSON], resp.json() or {})

        return (
            await self._read_or_none(
                "get_allocation_checks", f"read checks of allocation {alloc_id}", call
            )
            or {}
        )

    async def read_task_log(
        self,
        alloc_id: str,
        task: str,
        type: Literal["stdout", "stderr"] = "stderr",  # Nomad's query parameter name
        origin: Literal["start", "end"] = "end",
        offset: int = 16 * 1024,
    ) -> str:
        """The task's log as plain text: by default its last `offset` bytes of stderr.

        Returns "" when the allocation or its log is gone (GC'd, never started).
        """

        def call() -> str:
            return cast(
                str,
                self._nomad.client.stream_logs.stream(
                    alloc_id, task, type, follow=False, offset=offset, origin=origin, plain=True
                ),
            )

        text = await self._read_or_none(
            "read_task_log", f"read {type} of task {task} in {alloc_id}", call
        )
        return text or ""

    async def get_service(self, name: str) -> list[JSON]:
        """Nomad-native service registrations named `name` ([] when none)."""

        def call() -> list[JSON]:
            resp = self._service.request(name, params={"namespace": self.namespace}, method="get")
            return cast(list[JSON], resp.json() or [])

        return await self._read_or_none("get_service", f"read service {name}", call) or []

    async def status_leader(self) -> str:
        """The RPC address of the cluster leader ("" means no leader): a cheap liveness probe."""
        return await self._read(
            "status_leader",
            "read leader",
            lambda: cast(str, self._nomad.status.leader.get_leader()),
        )

    async def ping(self) -> bool:
        """For /healthz: True when Nomad answers and knows a leader. Never raises."""
        try:
            return bool(
                await self._once("ping", "read leader", self._nomad.status.leader.get_leader)
            )
        except ShamanError:
            return False
