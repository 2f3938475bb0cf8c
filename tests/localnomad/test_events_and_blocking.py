"""Contract: the NDJSON event stream (resume, heartbeats, envelopes) and blocking queries."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import aiohttp
import nomad
import pytest
import requests

from .conftest import REAL_NOMAD, LocalNomadProcess, service_job


class Stream:
    """An event-stream reader that splits lines itself (no aiohttp line cap)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.buf = b""

    async def next_line(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError("no event-stream line in time")
            chunk = await asyncio.wait_for(self.resp.content.readany(), remaining)
            if not chunk:
                raise EOFError("event stream closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    async def envelopes_until(self, pred: Callable[[list[dict[str, Any]]], bool],
                              timeout: float = 10.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred(out):
            line = await self.next_line(deadline - asyncio.get_running_loop().time())
            if line:
                out.append(line)
        return out


async def open_stream(session: aiohttp.ClientSession, url: str, **params: Any
                      ) -> aiohttp.ClientResponse:
    query: list[tuple[str, str]] = []
    for key, value in params.items():
        for v in value if isinstance(value, list) else [value]:
            query.append((key, str(v)))
    resp = await session.get(f"{url}/v1/event/stream", params=query,
                             timeout=aiohttp.ClientTimeout(total=None, sock_read=60))
    assert resp.status == 200, await resp.text()
    return resp


async def control_post(url: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(url) as resp:
        assert resp.status == 200


async def purge(client: nomad.Nomad, job_id: str) -> None:
    await asyncio.to_thread(lambda: client.job.deregister_job(job_id, purge=True))


def _events(envs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for env in envs for e in env["Events"]]


async def test_register_gives_job_then_eval_envelopes_with_same_index(
        nomad_url: str, client: nomad.Nomad, job_id: str) -> None:
    async with aiohttp.ClientSession() as session:
        resp = await open_stream(session, nomad_url, topic=[f"Job:{job_id}",
                                                            f"Evaluation:{job_id}"])
        stream = Stream(resp)
        assert await stream.next_line() == {}  # heartbeat at connect
        reg = await asyncio.to_thread(client.jobs.register_job,
                                      {"Job": service_job(job_id, count=1)})
        envs = await stream.envelopes_until(
            lambda es: any(e["Topic"] == "Evaluation" for e in _events(es)))
        job_env = next(e for e in envs if e["Events"][0]["Topic"] == "Job")
        eval_env = next(e for e in envs if e["Events"][0]["Topic"] == "Evaluation")
        assert job_env["Index"] == eval_env["Index"] == reg["EvalCreateIndex"]
        assert envs.index(job_env) < envs.index(eval_env)
        job_ev = job_env["Events"][0]
        assert job_ev["Type"] == "JobRegistered" and job_ev["Key"] == job_id
        assert job_ev["Payload"]["Job"]["ID"] == job_id and job_ev["Index"] == job_env["Index"]
        ev = eval_env["Events"][0]
        assert ev["FilterKeys"][0] == job_id and ev["Payload"]["Evaluation"]["ID"] == \
            reg["EvalID"]
        resp.close()
    await purge(client, job_id)


async def test_deployment_and_allocation_events(nomad_url: str, client: nomad.Nomad,
                                                job_id: str) -> None:
    async with aiohttp.ClientSession() as session:
        resp = await open_stream(session, nomad_url,
                                 topic=[f"Deployment:{job_id}", f"Allocation:{job_id}"])
        stream = Stream(resp)
        await asyncio.to_thread(client.jobs.register_job, {"Job": service_job(job_id, 1)})
        envs = await stream.envelopes_until(lambda es: any(
            e["Topic"] == "Deployment" and e["Payload"]["Deployment"]["Status"] == "successful"
            for e in _events(es)))
        events = _events(envs)
        assert {e["Topic"] for e in events} == {"Deployment", "Allocation"}
        success = next(e for e in events if e["Topic"] == "Deployment"
                   and e["Payload"]["Deployment"]["Status"] == "successful")
        assert success["Type"] == "PlanResult" and success["FilterKeys"] == [job_id]
        allocs = [e for e in events if e["Topic"] == "Allocation"]
        assert all(e["Payload"]["Allocation"]["Job"] is None for e in allocs)
        healthy = [e for e in allocs if (e["Payload"]["Allocation"]["DeploymentStatus"] or {})
                   .get("Healthy") is True]
        assert healthy and healthy[0]["Type"] == "AllocationUpdated"
        assert healthy[0]["FilterKeys"] == [job_id, success["Key"]]
        resp.close()
    await purge(client, job_id)


async def test_resume_is_inclusive(nomad_url: str, client: nomad.Nomad, job_id: str) -> None:
    reg = await asyncio.to_thread(client.jobs.register_job, {"Job": service_job(job_id, 1)})
    async with aiohttp.ClientSession() as session:
        resp = await open_stream(session, nomad_url, topic=[f"Job:{job_id}"],
                                 index=reg["EvalCreateIndex"])
        stream = Stream(resp)
        envs = await stream.envelopes_until(lambda es: len(es) >= 1)
        assert envs[0]["Index"] == reg["EvalCreateIndex"]  # the envelope at N comes again
        resp.close()
    await purge(client, job_id)


async def test_bad_stream_parameters(nomad_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{nomad_url}/v1/event/stream", params={"index": "x"}) as r:
            assert r.status == 400
            assert (await r.text()).startswith("Unable to parse index")
        async with session.get(f"{nomad_url}/v1/event/stream",
                               params={"topic": "Job:a:b"}) as r:
            assert r.status == 400
            assert (await r.text()).startswith("Invalid topic query")


async def test_blocking_query_wakes_on_change_and_times_out(
        nomad_url: str, client: nomad.Nomad, job_id: str) -> None:
    reg = await asyncio.to_thread(client.jobs.register_job, {"Job": service_job(job_id, 1)})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{nomad_url}/v1/job/{job_id}") as r:
            index = int(r.headers["X-Nomad-Index"])
            assert r.headers["X-Nomad-KnownLeader"] == "true"
            assert "X-Nomad-LastContact" in r.headers
            assert index >= reg["JobModifyIndex"]
        started = time.monotonic()
        async with session.get(f"{nomad_url}/v1/job/{job_id}",
                               params={"index": str(index + 10_000), "wait": "300ms"}) as r:
            assert r.status == 200
        assert 0.25 < time.monotonic() - started < 3

        async def changed() -> tuple[int, dict[str, Any]]:
            async with session.get(f"{nomad_url}/v1/job/{job_id}/allocations",
                                   params={"index": str(last), "wait": "10s"}) as r:
                return int(r.headers["X-Nomad-Index"]), await r.json()

        async with session.get(f"{nomad_url}/v1/job/{job_id}/allocations") as r:
            last = int(r.headers["X-Nomad-Index"])
        waiter = asyncio.create_task(changed())
        await asyncio.sleep(0.2)  # a negative check: the query must still be blocking
        assert not waiter.done()
        await asyncio.to_thread(client.job.deregister_job, job_id)
        new_index, _ = await asyncio.wait_for(waiter, 5)
        assert new_index > last
        async with session.get(f"{nomad_url}/v1/jobs", params={"wait": "bogus",
                                                                 "index": "1"}) as r:
            assert r.status == 400 and await r.text() == "Invalid wait time"
    await purge(client, job_id)


async def test_heartbeats_and_buffer_semantics(
        private_localnomad: Callable[..., LocalNomadProcess]) -> None:
    ln = private_localnomad("--heartbeat-s", "0.2", "--event-buffer-size", "5")
    n = nomad.Nomad(host="127.0.0.1", port=ln.port, timeout=10)
    for i in range(6):
        n.jobs.register_job({"Job": service_job(f"buf-{i}", count=1)})
    async with aiohttp.ClientSession() as session:
        # Heartbeats keep coming while nothing happens.
        resp = await open_stream(session, ln.url, topic=["Node"], index=10**9)
        stream = Stream(resp)
        started = time.monotonic()
        assert [await stream.next_line(2) for _ in range(3)] == [{}, {}, {}]
        assert time.monotonic() - started > 0.3
        resp.close()
        # index=1 is older than a 5-envelope buffer: it starts at the oldest kept, no error.
        resp = await open_stream(session, ln.url, index=1)
        stream = Stream(resp)
        envs = await stream.envelopes_until(lambda es: len(es) >= 1)
        assert envs[0]["Index"] > 1
        resp.close()
        # Dropping the buffer (a restart) leaves an empty ring: index=1 waits for new events.
        await control_post(f"{ln.url}/_localnomad/events/drop-buffer")
        resp = await open_stream(session, ln.url, index=1, topic=["Job"])
        stream = Stream(resp)
        assert await stream.next_line() == {}
        n.jobs.register_job({"Job": service_job("after-drop", count=1)})
        env = (await stream.envelopes_until(lambda es: len(es) >= 1))[0]
        assert env["Events"][0]["Key"] == "after-drop"
        # Cutting connections ends open streams.
        await control_post(f"{ln.url}/_localnomad/events/cut")
        with pytest.raises((EOFError, aiohttp.ClientPayloadError, aiohttp.ClientError)):
            for _ in range(100):
                await stream.next_line(3)
        resp.close()


@pytest.mark.skipif(bool(REAL_NOMAD), reason="uses localnomad's fault knobs")
def test_fault_knobs(private_localnomad: Callable[..., LocalNomadProcess]) -> None:
    ln = private_localnomad()
    requests.post(f"{ln.url}/_localnomad/faults",
                  json={"prefix": "/v1/jobs", "fail_next": 2, "status": 503},
                  timeout=5).raise_for_status()
    codes = [requests.get(f"{ln.url}/v1/jobs", timeout=5).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    requests.post(f"{ln.url}/_localnomad/faults",
                  json={"prefix": "/v1/status", "latency_ms": 300}, timeout=5)
    started = time.monotonic()
    requests.get(f"{ln.url}/v1/status/leader", timeout=5).raise_for_status()
    assert time.monotonic() - started >= 0.3
    requests.delete(f"{ln.url}/_localnomad/faults", timeout=5)
    started = time.monotonic()
    requests.get(f"{ln.url}/v1/status/leader", timeout=5).raise_for_status()
    assert time.monotonic() - started < 0.3
    _ = urlparse
