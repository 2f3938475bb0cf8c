"""End to end with real containers: buildah-built images from a local registry.

An image serving a health path over busybox httpd passes its HTTP check and its
deployment becomes `successful`; an image whose process exits 1 fails the deployment
with Nomad's description. Skipped where podman, buildah or docker-registry is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nomad
import pytest
import requests

from devstack.components.registry import Registry
from devstack.podman import ContainerStorage
from devstack.ports import free_port

from .conftest import MS, REAL_NOMAD, SEC, start_localnomad, wait_until

pytestmark = [
    pytest.mark.podman,
    pytest.mark.skipif(bool(REAL_NOMAD), reason="starts its own localnomad"),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("podman", "buildah",
                                                          "docker-registry")),
                       reason="needs podman, buildah and docker-registry"),
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("registry-home")
    reg = Registry(home, free_port())
    reg.start()
    try:
        yield reg.address
    finally:
        reg.stop()


def build_and_push(storage: ContainerStorage, ctx: Path, ref: str, cmd: list[str],
                   files: dict[str, str]) -> None:
    ctx.mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", ctx / "busybox")
    for rel, text in files.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(text)
    copies = "".join(f"COPY {rel} /{rel}\n" for rel in files)
    (ctx / "Containerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n" + copies
        + "CMD " + str(cmd).replace("'", '"') + "\n")
    env = storage.env()
    subprocess.run(storage.buildah("bud", "--isolation", "chroot", "-t", ref, str(ctx)),
                   env=env, check=True, capture_output=True)
    subprocess.run(storage.buildah("push", "--tls-verify=false", ref, f"docker://{ref}"),
                   env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def images(registry: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("images")
    storage = ContainerStorage(work / "build-storage").prepare()
    ok = f"{registry}/ln-e2e/web:ok"
    bad = f"{registry}/ln-e2e/web:bad"
    build_and_push(storage, work / "ok", ok,
                   ["/bin/busybox", "sh", "-c",
                    "echo serving on 8080; exec /bin/busybox httpd -f -p 8080 -h /www"],
                   {"www/health": "ok\n", "www/index.html": "hello\n"})
    build_and_push(storage, work / "bad", bad,
                   ["/bin/busybox", "sh", "-c", "echo crashing >&2; exit 1"], {})
    return {"ok": ok, "bad": bad}


def podman_job(job_id: str, image: str, release: str) -> dict[str, Any]:
    return {
        "ID": job_id, "Type": "service", "Meta": {"release": release},
        "TaskGroups": [{
            "Name": "web", "Count": 1,
            "Update": {"MaxParallel": 1, "MinHealthyTime": 300 * MS,
                       "HealthyDeadline": 20 * SEC, "ProgressDeadline": 0},
            "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
            "Networks": [{"DynamicPorts": [{"Label": "http", "To": 8080}]}],
            "Services": [{"Name": job_id, "PortLabel": "http", "Provider": "nomad",
                          "Checks": [{"Name": "health", "Type": "http", "Path": "/health",
                                      "Interval": 1 * SEC, "Timeout": 1 * SEC}]}],
            "Tasks": [{"Name": "app", "Driver": "docker",
                       "Config": {"image": image, "ports": ["http"]},
                       "Resources": {"CPU": 100, "MemoryMB": 64}}],
        }],
    }


def test_podman_deployment_succeeds_then_fails(images: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # podman wants a short runroot path, so the storage lives under a short /tmp name.
    podman_root = Path(tempfile.mkdtemp(prefix="lnp-", dir="/tmp"))
    ln = start_localnomad(data, "--runtime", "podman", "--podman-root", str(podman_root))
    # start_localnomad passes --runtime simulated first; argparse keeps the last value.
    client = nomad.Nomad(host="127.0.0.1", port=ln.port, timeout=30)
    try:
        client.jobs.register_job({"Job": podman_job("e2e", images["ok"], "1")})
        dep = wait_until(lambda: (d := client.job.get_deployment("e2e")) and d["Status"]
                         in ("successful", "failed") and d, 90, interval=0.2,
                         what="first deployment finished")
        alloc = client.job.get_allocations("e2e")[0]
        events = alloc["TaskStates"]["app"]["Events"]
        assert dep["Status"] == "successful", "\n".join(
            e["Type"] + ": " + e["DisplayMessage"] for e in events)
        assert dep["StatusDescription"] == "Deployment completed successfully"
        full = client.allocation.get_allocation(alloc["ID"])
        port = full["AllocatedResources"]["Shared"]["Ports"][0]
        assert port["To"] == 8080 and port["HostIP"] == "127.0.0.1"
        page = requests.get(f"http://127.0.0.1:{port['Value']}/index.html", timeout=5)
        assert page.status_code == 200 and page.text == "hello\n"
        checks = requests.get(f"{ln.url}/v1/allocation/{alloc['ID']}/checks", timeout=5).json()
        assert [c["Status"] for c in checks.values()] == ["success"]
        events = [e["Type"] for e in full["TaskStates"]["app"]["Events"]]
        assert "Driver" in events and "Started" in events

        # Restart localnomad: the running container is re-adopted, not restarted.
        ln.stop()
        ln = start_localnomad(data, "--runtime", "podman", "--podman-root", str(podman_root),
                              port=ln.port)
        client = nomad.Nomad(host="127.0.0.1", port=ln.port, timeout=30)
        again = client.allocation.get_allocation(alloc["ID"])
        assert again["ClientStatus"] == "running"
        assert again["TaskStates"]["app"]["Restarts"] == 0
        assert requests.get(f"http://127.0.0.1:{port['Value']}/health", timeout=5).ok
        wait_until(lambda: "serving on 8080" in requests.get(
            f"{ln.url}/v1/client/fs/logs/{alloc['ID']}",
            params={"task": "app", "type": "stdout", "plain": "true"}, timeout=5).text,
            10, what="logs of the adopted container")

        client.jobs.register_job({"Job": podman_job("e2e", images["bad"], "2")})
        failed = wait_until(lambda: (d := client.job.get_deployment("e2e"))
                            and d["ID"] != dep["ID"] and d["Status"] == "failed" and d, 90,
                            interval=0.2, what="second deployment failed")
        assert failed["StatusDescription"] == "Failed due to unhealthy allocations"
        bad = next(a for a in client.job.get_allocations("e2e") if a["JobVersion"] == 1)
        assert bad["ClientStatus"] == "failed"
        terminated = next(e for e in bad["TaskStates"]["app"]["Events"]
                      if e["Type"] == "Terminated")
        assert terminated["ExitCode"] == 1
        logs = requests.get(f"{ln.url}/v1/client/fs/logs/{bad['ID']}",
                            params={"task": "app", "type": "stderr", "plain": "true"},
                            timeout=5)
        assert "crashing" in logs.text
        # The old version keeps serving: the failed rollout stopped nothing.
        assert requests.get(f"http://127.0.0.1:{port['Value']}/health", timeout=5).ok
        client.job.deregister_job("e2e", purge=True)
        wait_until(lambda: all(a["ClientStatus"] != "running"
                               for a in client.job.get_allocations("e2e")), 30,
                   what="containers stopped")
    finally:
        ln.stop()
        storage = ContainerStorage(podman_root)
        subprocess.run(storage.podman("rm", "-a", "-f", "-t", "0"), env=storage.env(),
                       capture_output=True)
        subprocess.run(["umount", "-R", str(storage.root / "overlay")], capture_output=True)
        shutil.rmtree(podman_root, ignore_errors=True)
