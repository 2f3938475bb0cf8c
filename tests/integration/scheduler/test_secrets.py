"""Secrets reach the task through the template at the pinned version, and nowhere else."""

from __future__ import annotations

import json
import secrets
import urllib.request
from typing import Any

import hvac
import pytest

from services.scheduler.app import SchedulerApp
from shared.commands import ChangeSecrets
from shared.events import encode_event
from tests.integration.scheduler.conftest import Harness, localnomad_control
from tests.unit.scheduler.waiting import wait_for


def nomad_text(addr: str, path: str) -> str:
    with urllib.request.urlopen(f"{addr}{path}", timeout=5) as resp:
        return str(resp.read().decode())


async def test_secret_value_reaches_the_task_but_no_spec_event_record_or_log(
    harness: Harness, scheduler: SchedulerApp, openbao: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    app = harness.unique("secret")
    marker = f"marker-{secrets.token_hex(12)}"
    vault = hvac.Client(url=openbao.addr, token=openbao.token)
    written = vault.secrets.kv.v2.create_or_update_secret(
        path=f"shaman/apps/{app}", secret={"API_TOKEN": marker}, mount_point="secret")
    version = int(written["data"]["version"])
    # The simulated task prints what its environment got.
    localnomad_control(harness.nomad_addr, "behaviors",
                       {"job": app, "stdout": "token=$API_TOKEN\n"})

    await harness.create_app(app)
    await harness.deploy_image(app, f"{app}-d1", f"127.0.0.1:5999/{app}@sha256:{1:064x}")
    await harness.wait_submitted(f"{app}-d1")
    await harness.create_deploy(f"{app}-s1", app, kind="secrets")
    await harness.publish(ChangeSecrets(deploy_id=f"{app}-s1", app=app, version=version,
                                        keys=["API_TOKEN"], description="", created_by="t"),
                          f"{app}-s1:release")
    deploy = await harness.wait_submitted(f"{app}-s1")
    assert deploy.release == 2

    async def task_saw_secret() -> bool:
        for alloc in await harness.nomad.get_job_allocations(app):
            if alloc.get("JobVersion") != deploy.job_version:
                continue
            out = await harness.nomad.read_task_log(alloc["ID"], "app", "stdout", "start", 0)
            if marker in out:
                return True
        return False

    try:
        await wait_for(task_saw_secret, 20, interval=0.1, message="the task got the secret")
    except AssertionError:
        allocs = await harness.nomad.get_job_allocations(app)
        details = []
        for a in allocs:
            full = await harness.nomad.get_allocation(a["ID"]) or {}
            events = [(e.get("Type"), e.get("DisplayMessage"))
                      for st in (full.get("TaskStates") or {}).values()
                      for e in st.get("Events") or []]
            out = await harness.nomad.read_task_log(a["ID"], "app", "stdout", "start")
            details.append((a.get("JobVersion"), a.get("ClientStatus"), events, out))
        raise AssertionError(f"the task did not get the secret: {details}") from None

    sinks = {
        "job": nomad_text(harness.nomad_addr, f"/v1/job/{app}"),
        "versions": nomad_text(harness.nomad_addr, f"/v1/job/{app}/versions"),
        "plan": json.dumps(await harness.nomad.plan_job(app, (await harness.job(app)) or {})),
        "events": "\n".join(encode_event(e).decode() for e in harness.events),
        "releases": "\n".join(repr(r) for r in await harness.releases(app)),
        "deploys": repr(await harness.deploy(f"{app}-s1")),
    }
    captured = capfd.readouterr()
    sinks["logs"] = captured.out + captured.err
    assert "API_TOKEN" in sinks["job"]  # the name is there, as a template reference
    leaks = [name for name, text in sinks.items() if marker in text]
    assert leaks == []
