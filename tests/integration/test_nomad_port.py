"""shared.nomad against a real HTTP server: localnomad (simulated runtime) on a free port.

Register, plan, check-and-set conflicts, error mapping and the event stream, all through
the real python-nomad and aiohttp code paths. Skipped, with the reason, when localnomad
is not installed yet; a localnomad that is installed but does not come up fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devstack.ports import free_port
from shared.errors import ConflictError, PermanentError
from shared.nomad import Envelope, NomadClient, NomadEventStream, ReadRetry
from shared.nomad.metrics import OPERATIONS

LOCALNOMAD = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "shaman-localnomad"


def _leader_ok(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"{addr}/v1/status/leader", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def nomad_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("devstack.localnomad.__main__") is None or not LOCALNOMAD.exists():
        pytest.skip("localnomad is not runnable yet (devstack/localnomad/__main__.py is missing)")
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    tmp = tmp_path_factory.mktemp("localnomad")
    log_path = tmp / "localnomad.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(LOCALNOMAD),
                "--addr",
                f"127.0.0.1:{port}",
                "--runtime",
                "simulated",
                "--data-dir",
                str(tmp / "data"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _leader_ok(addr):
            if proc.poll() is not None:
                pytest.fail(
                    f"localnomad exited with {proc.returncode}: {log_path.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"localnomad not ready within 30s: {log_path.read_text()[-3000:]}")
            time.sleep(0.05)  # polling interval of the condition above
        yield addr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_ids = itertools.count()


@pytest.fixture
def job_id() -> str:
    return f"port-{next(_ids)}-{int(time.time() * 1000) % 100000}"


@pytest.fixture
async def nomad(nomad_addr: str) -> AsyncIterator[NomadClient]:
    retry = ReadRetry(attempts=3, deadline_s=10, initial_s=0.05, max_s=0.5, jitter_s=0.05)
    async with NomadClient(nomad_addr, read_retry=retry) as client:
        yield client


def _job(job_id: str, image: str = "busybox:1", count: int = 1) -> dict[str, Any]:
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "service",
        "Datacenters": ["*"],
        "Meta": {"shaman.release": "1"},
        "TaskGroups": [
            {
                "Name": "web",
                "Count": count,
                "Networks": [{"DynamicPorts": [{"Label": "http", "To": 8080}]}],
                "Update": {
                    "MaxParallel": 1,
                    "HealthCheck": "task_states",
                    "MinHealthyTime": 100_000_000,
                    "HealthyDeadline": 60_000_000_000,
                    "ProgressDeadline": 120_000_000_000,
                    "AutoRevert": False,
                },
                "Tasks": [
                    {
                        "Name": "web",
                        "Driver": "docker",
                        "Config": {"image": image, "ports": ["http"]},
                        "Resources": {"CPU": 100, "MemoryMB": 64},
                    }
                ],
            }
        ],
    }


async def test_leader_and_missing_things(nomad: NomadClient, job_id: str) -> None:
    assert await nomad.status_leader()
    assert await nomad.ping() is True
    assert await nomad.get_job(job_id) is None
    assert await nomad.get_versions(job_id) == []
    assert await nomad.get_latest_deployment(job_id) is None
    assert await nomad.get_allocation("00000000-0000-0000-0000-000000000000") is None


async def test_plan_register_and_check_and_set(nomad: NomadClient, job_id: str) -> None:
    job = _job(job_id)
    plan = await nomad.plan_job(job_id, job)
    assert plan["JobModifyIndex"] == 0
    assert plan["Diff"]["Type"] == "Added"

    created = await nomad.register_job(job, enforce_index=0)
    index = created["JobModifyIndex"]
    assert index > 0
    stored = await nomad.get_job(job_id)
    assert stored is not None and stored["ID"] == job_id
    assert stored["JobModifyIndex"] == index

    # A second "create" loses the CAS: the job exists now.
    with pytest.raises(ConflictError) as lost:
        await nomad.register_job(job, enforce_index=0)
    assert lost.value.expected == 0

    # Same spec: planning shows no change, the job's index is the one to enforce.
    unchanged = await nomad.plan_job(job_id, job)
    assert unchanged["Diff"]["Type"] == "None"
    assert unchanged["JobModifyIndex"] == index

    # A change registered against a stale index is refused; against the fresh one it lands.
    changed = _job(job_id, image="busybox:2")
    with pytest.raises(ConflictError):
        await nomad.register_job(changed, enforce_index=index - 1 if index > 1 else index + 1000)
    updated = await nomad.register_job(changed, enforce_index=index)
    assert updated["JobModifyIndex"] > index
    versions = await nomad.get_versions(job_id)
    assert sorted(v["Version"] for v in versions) == [0, 1]

    listed = await nomad.list_jobs(prefix=job_id)
    assert [j["ID"] for j in listed] == [job_id]

    await nomad.deregister_job(job_id, purge=True)
    assert await nomad.get_job(job_id) is None


async def test_an_invalid_job_is_a_permanent_error_with_nomads_text(
    nomad: NomadClient, job_id: str
) -> None:
    job = _job(job_id)
    job["TaskGroups"][0]["Tasks"][0]["Driver"] = ""
    with pytest.raises(PermanentError) as info:
        await nomad.register_job(job, enforce_index=0)
    assert "nomad rejected register job" in str(info.value)
    assert await nomad.get_job(job_id) is None


async def test_event_stream_delivers_the_registration(
    nomad_addr: str, nomad: NomadClient, job_id: str
) -> None:
    stream = NomadEventStream(nomad_addr, topics=[f"Job:{job_id}", f"Deployment:{job_id}"])
    subscribed = asyncio.Event()
    found: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        async with contextlib.aclosing(stream.envelopes(0, on_subscribed=subscribed.set)) as envs:
            async for env in envs:
                if any(e.Topic == "Job" and e.Key == job_id for e in env.Events):
                    found.set_result(env)
                    return

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        created = await nomad.register_job(_job(job_id), enforce_index=0)
        env = await asyncio.wait_for(asyncio.shield(found), 10)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    event = next(e for e in env.Events if e.Topic == "Job")
    assert event.Type == "JobRegistered"
    assert event.object is not None and event.object["ID"] == job_id
    assert env.Index >= created["JobModifyIndex"]
    assert stream.heartbeats >= 1

    # The deployment the registration started becomes visible through the port too.
    deadline = time.monotonic() + 20
    deployment = None
    while deployment is None and time.monotonic() < deadline:
        deployment = await nomad.get_latest_deployment(job_id)
        if deployment is None:
            await asyncio.sleep(0.05)  # polling interval of the condition above
    assert deployment is not None and deployment["JobID"] == job_id
    assert await nomad.get_deployment(deployment["ID"]) is not None
    allocs = await nomad.get_deployment_allocations(deployment["ID"])
    assert all(a["JobID"] == job_id for a in allocs)
    assert isinstance(await nomad.get_job_allocations(job_id), list)
    await nomad.deregister_job(job_id, purge=True)


async def test_validate_deployments_allocations_and_terminal_deployment_errors(
    nomad: NomadClient, job_id: str
) -> None:
    assert await nomad.validate_job(_job(job_id)) == []
    bad = _job(job_id)
    bad["TaskGroups"][0]["Tasks"][0]["Driver"] = ""
    problems = await nomad.validate_job(bad)
    assert problems and "driver" in problems[0].lower()

    await nomad.register_job(_job(job_id), enforce_index=0)
    deadline = time.monotonic() + 30
    deployment: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        deployment = await nomad.get_latest_deployment(job_id)
        if deployment is not None and deployment["Status"] == "successful":
            break
        await asyncio.sleep(0.05)  # polling interval of the condition above
    assert deployment is not None and deployment["Status"] == "successful"
    assert [d["ID"] for d in await nomad.get_job_deployments(job_id)] == [deployment["ID"]]
    assert deployment["ID"] in {d["ID"] for d in await nomad.list_deployments()}

    # Nomad answers a write on a finished deployment with a 500; it is not worth retrying.
    with pytest.raises(PermanentError, match="terminal deployment"):
        await nomad.fail_deployment(deployment["ID"])
    with pytest.raises(PermanentError, match="terminal deployment"):
        await nomad.promote_deployment(deployment["ID"])

    allocs = await nomad.get_job_allocations(job_id)
    assert len(allocs) == 1
    alloc = await nomad.get_allocation(allocs[0]["ID"])
    assert alloc is not None and alloc["JobID"] == job_id
    assert isinstance(await nomad.read_task_log(alloc["ID"], "web"), str)
    assert isinstance(await nomad.get_allocation_checks(alloc["ID"]), dict)
    await nomad.deregister_job(job_id, purge=True)


def _calls(operation: str, outcome: str) -> float | None:
    return REGISTRY.get_sample_value(
        "shaman_nomad_requests_total", {"operation": operation, "outcome": outcome}
    )


def _timed(operation: str) -> float:
    return REGISTRY.get_sample_value(
        "shaman_nomad_request_seconds_count", {"operation": operation}
    ) or 0.0


async def test_calls_are_counted_by_operation_and_outcome(
    nomad: NomadClient, job_id: str
) -> None:
    # The client creates its series at 0: a first failure is an increase too.
    assert _calls("get_job", "not_found") is not None
    before = {
        key: _calls(*key) or 0.0
        for key in (
            ("get_job", "not_found"),
            ("get_job", "ok"),
            ("register_job", "ok"),
            ("register_job", "conflict"),
            ("register_job", "client_error"),
            ("deregister_job", "ok"),
        )
    }
    timed_before = _timed("get_job")

    assert await nomad.get_job(job_id) is None
    assert _calls("get_job", "not_found") == before["get_job", "not_found"] + 1
    assert _timed("get_job") == timed_before + 1

    await nomad.register_job(_job(job_id), enforce_index=0)
    with pytest.raises(ConflictError):
        await nomad.register_job(_job(job_id), enforce_index=0)
    invalid = _job(job_id)
    invalid["TaskGroups"][0]["Tasks"][0]["Driver"] = ""
    with pytest.raises(PermanentError):
        await nomad.register_job(invalid, enforce_index=None)
    assert await nomad.get_job(job_id) is not None
    await nomad.deregister_job(job_id, purge=True)

    after = {key: _calls(*key) for key in before}
    assert after == {
        ("get_job", "not_found"): before["get_job", "not_found"] + 1,
        ("get_job", "ok"): before["get_job", "ok"] + 1,
        ("register_job", "ok"): before["register_job", "ok"] + 1,
        ("register_job", "conflict"): before["register_job", "conflict"] + 1,
        ("register_job", "client_error"): before["register_job", "client_error"] + 1,
        ("deregister_job", "ok"): before["deregister_job", "ok"] + 1,
    }
    # Labels are the fixed operation names: the job id never becomes one.
    samples = [
        sample
        for metric in REGISTRY.collect()
        if metric.name in ("shaman_nomad_requests", "shaman_nomad_request_seconds")
        for sample in metric.samples
    ]
    assert samples
    assert {sample.labels["operation"] for sample in samples} <= set(OPERATIONS)
    assert not any(job_id in str(sample.labels) for sample in samples)

