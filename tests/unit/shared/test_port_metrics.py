"""The outcome labels of the Nomad and Vault call counters, against a stub and on their own.

The counters live in prometheus_client's default registry; each test reads them before and
after, since other tests in the process count too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import hvac.exceptions as hvac_exc
import pytest
import requests
from aiohttp import web
from prometheus_client import REGISTRY

from devstack.ports import free_port
from shared.errors import (
    BackendUnavailable,
    ConflictError,
    NotFoundError,
    PermanentError,
    ShamanError,
    TemporaryError,
)
from shared.nomad import NomadClient, ReadRetry
from shared.nomad import metrics as nomad_metrics
from shared.vault import metrics as vault_metrics

_ONCE = ReadRetry(attempts=1, deadline_s=5, initial_s=0.01, max_s=0.02, jitter_s=0.01)


def _nomad_calls(operation: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "shaman_nomad_requests_total", {"operation": operation, "outcome": outcome}
    )
    return value or 0.0


@contextlib.asynccontextmanager
async def _stub(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# What the stub answers for GET /v1/job/<name>, and the outcome it must count as.
_ANSWERS: dict[str, tuple[int, str, str]] = {
    "fine": (200, '{"ID": "fine"}', "ok"),
    "gone": (404, "job not found", "not_found"),
    "forbidden": (403, "Permission denied", "client_error"),
    "bad": (400, "bad request", "client_error"),
    "invalid": (500, "1 error occurred: validation failed", "client_error"),
    "leaderless": (500, "No cluster leader", "server_error"),
    "limited": (429, "slow down", "server_error"),
    "garbled": (200, "<html>proxy error</html>", "server_error"),
}


async def test_nomad_calls_are_counted_with_the_outcome_of_their_answer() -> None:
    async def job(request: web.Request) -> web.Response:
        status, text, _ = _ANSWERS[request.match_info["name"]]
        return web.Response(status=status, text=text, content_type="application/json")

    async def register(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Enforcing job modify index 0: job already exists")

    app = web.Application()
    app.router.add_get("/v1/job/{name}", job)
    app.router.add_post("/v1/job/{name}", register)
    before = {o: _nomad_calls("get_job", o) for o in nomad_metrics.OUTCOMES}
    conflicts = _nomad_calls("register_job", "conflict")
    expected = dict(before)
    async with _stub(app) as addr, NomadClient(addr, read_retry=_ONCE) as client:
        for name, (_, _, outcome) in _ANSWERS.items():
            with contextlib.suppress(ShamanError):
                await client.get_job(name)
            expected[outcome] += 1
        with pytest.raises(ConflictError):
            await client.register_job({"ID": "web"}, enforce_index=0)
    assert {o: _nomad_calls("get_job", o) for o in nomad_metrics.OUTCOMES} == expected
    assert _nomad_calls("register_job", "conflict") == conflicts + 1


async def test_an_unreachable_nomad_counts_every_attempt_as_unavailable() -> None:
    retry = ReadRetry(attempts=2, deadline_s=10, initial_s=0.01, max_s=0.02, jitter_s=0.01)
    before = _nomad_calls("get_job", "unavailable")
    pings = _nomad_calls("ping", "unavailable")
    async with NomadClient(f"http://127.0.0.1:{free_port()}", read_retry=retry) as client:
        with pytest.raises(BackendUnavailable):
            await client.get_job("web")
        assert await client.ping() is False
    assert _nomad_calls("get_job", "unavailable") == before + 2
    assert _nomad_calls("ping", "unavailable") == pings + 1


def test_nomad_outcome_of_each_error_kind() -> None:
    outcome = nomad_metrics.outcome_of
    assert outcome(NotFoundError("x"), answered=True) == "not_found"
    assert outcome(ConflictError("x"), answered=True) == "conflict"
    assert outcome(PermanentError("x"), answered=True) == "client_error"
    assert outcome(TemporaryError("x"), answered=True) == "server_error"
    assert outcome(TemporaryError("timed out"), answered=False) == "unavailable"
    assert outcome(BackendUnavailable("nomad", "refused"), answered=False) == "unavailable"


def test_vault_outcome_of_each_hvac_error() -> None:
    outcome = vault_metrics.outcome_of
    assert outcome(hvac_exc.InvalidPath(errors=[])) == "not_found"
    assert outcome(hvac_exc.InvalidPath(errors=["no handler for route 'nope/data/x'"])) == (
        "client_error"
    )
    cas = "check-and-set parameter did not match the current version"
    assert outcome(hvac_exc.InvalidRequest(errors=[cas])) == "conflict"
    assert outcome(hvac_exc.InvalidRequest(errors=["bad"])) == "client_error"
    assert outcome(hvac_exc.Forbidden(errors=["permission denied"])) == "client_error"
    assert outcome(hvac_exc.Unauthorized()) == "client_error"
    assert outcome(hvac_exc.VaultDown(errors=["Vault is sealed"])) == "server_error"
    assert outcome(hvac_exc.InternalServerError()) == "server_error"
    assert outcome(hvac_exc.RateLimitExceeded()) == "server_error"
    assert outcome(hvac_exc.UnexpectedError()) == "server_error"
    assert outcome(requests.ConnectionError("refused")) == "unavailable"
    assert outcome(requests.ReadTimeout("slow")) == "unavailable"
    statuses = {s: vault_metrics.outcome_for_status(s) for s in (200, 404, 403, 429, 501, 503)}
    assert statuses == {
        200: "ok",
        404: "not_found",
        403: "client_error",
        429: "server_error",
        501: "server_error",
        503: "server_error",
    }


def test_vault_track_counts_once_and_reraises() -> None:
    def calls(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "shaman_vault_requests_total", {"operation": "read_credential", "outcome": outcome}
        )
        return value or 0.0

    ok, forbidden = calls("ok"), calls("client_error")
    with vault_metrics.track("read_credential"):
        pass
    with pytest.raises(hvac_exc.Forbidden), vault_metrics.track("read_credential"):
        raise hvac_exc.Forbidden(errors=["permission denied"])
    assert (calls("ok"), calls("client_error")) == (ok + 1, forbidden + 1)
