"""The api's calls against the whole stack: a deploy requested over NATS, a config change,
then destroying the app stops its Nomad job and frees the name.

The whole stack as `make run` starts it (tests/conftest.py `shaman_stack`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import pytest

from devstack.images import build, push
from shared import subjects
from shared.events import DeployRequested, encode_event

if TYPE_CHECKING:
    from tests.conftest import ShamanStack

pytestmark = [pytest.mark.e2e, pytest.mark.podman]

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"
APP = "lifecycle"


def api(stack: ShamanStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{stack.api_url}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {stack.admin_token}",
                 "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def nomad_job(stack: ShamanStack) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{stack.nomad_addr}/v1/job/{APP}", timeout=10) as resp:
            job: dict[str, Any] = json.loads(resp.read())
            return job
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def client_credentials(stack: ShamanStack) -> dict[str, str]:
    """NATS login of the stack's `client` user (any NATS client), when the stack has users."""
    password = getattr(stack.config, "nats_password", None)
    return {"user": "client", "password": password("client")} if password else {}


def finished(stack: ShamanStack, deploy_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        _, record = api(stack, "GET", f"/v1/apps/{APP}/deploys/{deploy_id}")
        return record if record["status"] in ("healthy", "failed", "rolled_back") else None
    return check


@pytest.fixture(scope="module")
def image(shaman_stack: ShamanStack, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("lifecycle-ctx")
    shutil.copytree(HELLO, context, dirs_exist_ok=True)
    ref = f"{shaman_stack.registry}/{APP}:v1"
    log = tmp_path_factory.mktemp("lifecycle-build") / "build.log"
    build(shaman_stack.storage, context, ref, log,
          build_args={"REGISTRY": shaman_stack.registry})
    push(shaman_stack.storage, ref, log)
    return ref


def test_nats_request_config_change_and_destroy(shaman_stack: ShamanStack, image: str) -> None:
    status, body = api(shaman_stack, "POST", "/v1/apps",
                       {"name": APP, "port": 8080, "health": {"path": "/health"}})
    assert status == 201, body

    async def request_over_nats() -> None:
        nc = await nats.connect(shaman_stack.nats_url, **client_credentials(shaman_stack))
        try:
            await nc.jetstream().publish(
                subjects.deploy_request_subject(APP),
                encode_event(DeployRequested(app=APP, image=image)),
                headers={"Shaman-Token": shaman_stack.admin_token, "Nats-Msg-Id": "ci-1"},
            )
        finally:
            await nc.close()

    asyncio.run(request_over_nats())

    def first_deploy() -> dict[str, Any] | None:
        _, listed = api(shaman_stack, "GET", f"/v1/apps/{APP}/deploys")
        return listed["deploys"][0] if listed["deploys"] else None

    deploy = wait_for("the NATS request's deploy", first_deploy, timeout_s=30)
    record = wait_for("the deploy to finish", finished(shaman_stack, deploy["id"]), 180)
    assert record["status"] == "healthy" and record["release"] == 1, record

    status, config_deploy = api(shaman_stack, "PATCH", f"/v1/apps/{APP}/config",
                                {"GREETING": "configured"})
    assert status == 202, config_deploy
    record = wait_for("the config deploy", finished(shaman_stack, config_deploy["id"]), 180)
    assert record["status"] == "healthy" and record["release"] == 2, record
    _, release = api(shaman_stack, "GET", f"/v1/apps/{APP}/releases/2")
    assert release["config"] == {"GREETING": "configured"} and release["kind"] == "config"
    job = nomad_job(shaman_stack)
    assert job is not None and job["Meta"]["shaman_release"] == "2"

    status, body = api(shaman_stack, "DELETE", f"/v1/apps/{APP}")
    assert status == 202, body

    def job_stopped() -> bool:
        job = nomad_job(shaman_stack)
        return job is None or bool(job.get("Stop")) or job.get("Status") == "dead"

    wait_for("the Nomad job to stop", job_stopped, timeout_s=60)
    assert api(shaman_stack, "GET", f"/v1/apps/{APP}")[0] == 404
    status, body = api(shaman_stack, "POST", "/v1/apps", {"name": APP})
    assert status == 201, body
    assert api(shaman_stack, "GET", f"/v1/apps/{APP}/releases")[1] == {"releases": []}
