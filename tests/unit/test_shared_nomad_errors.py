"""shared.nomad: Nomad's answers and python-nomad's exceptions mapped to shared.errors,
and the client's retry policy (reads retried, writes not) against an in-process HTTP stub."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import requests
from aiohttp import web
from nomad.api import exceptions as nomad_exc

from devstack.ports import free_port
from shared.errors import (
    BackendUnavailable,
    ConflictError,
    NotFoundError,
    PermanentError,
    TemporaryError,
)
from shared.nomad import NomadClient, ReadRetry
from shared.nomad.errors import error_for_status, map_nomad_exception


def _response(status: int, text: str, headers: dict[str, str] | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = text.encode()
    resp.headers.update(headers or {})
    return resp


def test_enforce_index_conflict_is_a_conflict_with_both_indexes() -> None:
    err = error_for_status(
        500,
        "Enforcing job modify index 42: job exists with conflicting job modify index: 57",
        "register job web",
    )
    assert isinstance(err, ConflictError)
    assert (err.expected, err.actual) == (42, 57)
    new = error_for_status(500, "Enforcing job modify index 0: job already exists", "register")
    assert isinstance(new, ConflictError) and new.expected == 0 and new.actual is None


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        (404, "job not found", NotFoundError),
        (500, "deployment not found", NotFoundError),
        (400, "Job ID does not match name", PermanentError),
        (400, "Request body is empty", PermanentError),
        (403, "Permission denied", PermanentError),
        (405, "Invalid method", PermanentError),
        (
            500,
            "1 error occurred:\n\t* Task group web validation failed: missing driver",
            PermanentError,
        ),
        (500, 'cannot update job from type "service" to "batch"', PermanentError),
        (500, 'job "web" is in nonexistent namespace "apps"', PermanentError),
        (500, "can't promote terminal deployment", PermanentError),
        (500, "No cluster leader", TemporaryError),
        (500, "rpc error: EOF", TemporaryError),
        (500, "something nobody has seen before", TemporaryError),
        (502, "bad gateway", TemporaryError),
        (503, "", TemporaryError),
        (429, "slow down", TemporaryError),
    ],
)
def test_status_and_text_mapping(status: int, text: str, kind: type[Exception]) -> None:
    err = error_for_status(status, text, "op")
    assert type(err) is kind, (status, text, err)
    if text:
        assert text.splitlines()[0].strip() in str(err)


def test_validation_text_mentioning_a_timeout_field_stays_permanent() -> None:
    text = "1 error occurred:\n\t* Task group web validation failed: kill_timeout must be >= 0"
    assert isinstance(error_for_status(500, text, "plan"), PermanentError)


def test_python_nomad_exceptions_are_mapped() -> None:
    cas = nomad_exc.BaseNomadException(
        _response(500, "Enforcing job modify index 3: job does not exist")
    )
    assert isinstance(map_nomad_exception(cas, "register job web"), ConflictError)
    assert isinstance(
        map_nomad_exception(
            nomad_exc.URLNotFoundNomadException(_response(404, "job not found")), "x"
        ),
        NotFoundError,
    )
    assert isinstance(
        map_nomad_exception(nomad_exc.BadRequestNomadException(_response(400, "bad")), "x"),
        PermanentError,
    )
    refused = nomad_exc.BaseNomadException(requests.ConnectionError("Connection refused"))
    mapped = map_nomad_exception(refused, "read job web")
    assert isinstance(mapped, BackendUnavailable) and mapped.component == "nomad"
    timeout = nomad_exc.BaseNomadException(requests.ReadTimeout("read timed out"))
    assert type(map_nomad_exception(timeout, "read job web")) is TemporaryError
    stream_timeout = nomad_exc.TimeoutNomadException(requests.ConnectionError("x"))
    assert type(map_nomad_exception(stream_timeout, "stream")) is TemporaryError
    limited = nomad_exc.BaseNomadException(_response(429, "rate", {"Retry-After": "3"}))
    mapped = map_nomad_exception(limited, "x")
    assert isinstance(mapped, TemporaryError) and mapped.retry_after_s == 3.0


# -- the client's policy against a stub -----------------------------------------------------------


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


_FAST = ReadRetry(attempts=3, deadline_s=5, initial_s=0.01, max_s=0.02, jitter_s=0.01)


async def test_reads_are_retried_on_temporary_errors_and_writes_are_not() -> None:
    calls = {"read": 0, "write": 0}

    async def read(request: web.Request) -> web.Response:
        calls["read"] += 1
        if calls["read"] < 3:
            return web.Response(status=500, text="No cluster leader")
        return web.json_response({"ID": "web", "JobModifyIndex": 9})

    async def write(request: web.Request) -> web.Response:
        calls["write"] += 1
        return web.Response(status=500, text="No cluster leader")

    app = web.Application()
    app.router.add_get("/v1/job/web", read)
    app.router.add_post("/v1/job/web", write)
    async with _stub(app) as addr, NomadClient(addr, read_retry=_FAST) as client:
        job = await client.get_job("web")
        assert job == {"ID": "web", "JobModifyIndex": 9}
        with pytest.raises(TemporaryError):
            await client.register_job({"ID": "web"}, enforce_index=9)
    assert calls == {"read": 3, "write": 1}


async def test_not_found_reads_return_none_or_empty_and_namespace_is_sent() -> None:
    seen: list[dict[str, str]] = []

    async def not_found(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.Response(status=404, text="job not found")

    async def service(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.json_response([{"ServiceName": "web", "Address": "127.0.0.1", "Port": 80}])

    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(
            {
                "EnforceIndex": str(body.get("EnforceIndex")),
                "JobModifyIndex": str(body.get("JobModifyIndex")),
            }
        )
        return web.Response(status=500, text="Enforcing job modify index 0: job already exists")

    async def checks(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.json_response({"c1": {"Status": "failure", "Output": "HTTP 500"}})

    app = web.Application()
    app.router.add_get("/v1/allocation/a1/checks", checks)
    app.router.add_get("/v1/allocation/gone/checks", not_found)
    app.router.add_get("/v1/job/missing", not_found)
    app.router.add_get("/v1/job/missing/versions", not_found)
    app.router.add_get("/v1/service/web", service)
    app.router.add_post("/v1/job/web", register)
    async with _stub(app) as addr, NomadClient(addr, namespace="apps", read_retry=_FAST) as c:
        assert await c.get_job("missing") is None
        assert await c.get_versions("missing") == []
        assert (await c.get_service("web"))[0]["Port"] == 80
        with pytest.raises(ConflictError):
            await c.register_job({"ID": "web"}, enforce_index=0)
        checks_of = await c.get_allocation_checks("a1")
        assert checks_of == {"c1": {"Status": "failure", "Output": "HTTP 500"}}
        assert await c.get_allocation_checks("gone") == {}
    assert seen[4]["namespace"] == "apps"
    assert seen[0]["namespace"] == "apps"
    assert seen[2]["namespace"] == "apps"  # /v1/service is not auto-namespaced by python-nomad
    assert seen[3] == {"EnforceIndex": "True", "JobModifyIndex": "0"}


async def test_unreachable_nomad_is_backend_unavailable_after_retries() -> None:
    client = NomadClient(f"http://127.0.0.1:{free_port()}", read_retry=_FAST, timeout_s=2)
    async with client:
        with pytest.raises(BackendUnavailable):
            await client.get_job("web")
        assert await client.ping() is False


def test_clients_from_the_services_settings() -> None:
    from shared.nomad import NomadEventStream
    from shared.settings import NomadSettings, VaultSettings
    from shared.vault import VaultClient

    nomad_settings = NomadSettings.model_validate(
        {"nomad_addr": "http://nomad:4646", "nomad_token": "tok", "nomad_namespace": "apps"}
    )
    client = NomadClient.from_settings(nomad_settings)
    assert (client.address, client.namespace) == ("http://nomad:4646", "apps")
    assert "tok" not in repr(client)
    stream = NomadEventStream.from_settings(nomad_settings, ["Job:web"])
    assert stream.url == "http://nomad:4646/v1/event/stream"
    assert "tok" not in repr(stream)

    vault = VaultClient.from_settings(
        VaultSettings.model_validate({"vault_addr": "http://vault:8200", "vault_token": "root-tok"})
    )
    assert vault.path_for("web") == "secret/data/shaman/apps/web"
    assert "root-tok" not in repr(vault)
    with pytest.raises(ValueError, match="VAULT_TOKEN"):
        VaultClient.from_settings(VaultSettings.model_validate({"vault_addr": "http://v:8200"}))
