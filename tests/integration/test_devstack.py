"""The dev stack supervisor against real processes: up, status, idempotence, down, failures.

Each test gets its own SHAMAN_HOME under pytest's temp directory and free ports, so a stack
that `make run` left running on the default ports is never touched.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import pytest

from devstack.components.base import http_request, port_is_free
from devstack.images import build, manifest_exists
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from devstack.seed import REPOSITORY, TAG, busybox_ref, ensure_busybox
from devstack.service_env import service_env
from devstack.stack import INFRA, SERVICES, Stack, StackConfig

REPO = Path(__file__).resolve().parents[2]
SHAMAN = [sys.executable, "-m", "devstack.shaman_command"]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def infra_stack(tmp_path: Path) -> Iterator[Stack]:
    """nats + persistent OpenBao + registry + localnomad (simulated), no services."""
    config = StackConfig.for_tests(
        tmp_path / "home", components=INFRA, runtime="simulated", openbao_mode="persistent",
    )
    stack = Stack(config)
    yield stack
    stack.down()


def test_up_status_idempotent_up_and_down(infra_stack: Stack) -> None:
    first = infra_stack.up()
    assert first.ok, first.failed
    assert [s.name for s in first.steps] == list(INFRA)
    assert {s.outcome for s in first.steps} == {"started"}

    rows = infra_stack.status()
    assert [r.name for r in rows] == list(INFRA)
    assert all(r.healthy and r.pid for r in rows), rows
    pids = {r.name: r.pid for r in rows}

    # A second `up`, by a new supervisor as a second `shaman dev up` would be, changes nothing.
    again = Stack(infra_stack.config).up()
    assert again.ok, again.failed
    assert {s.outcome for s in again.steps} == {"already running"}
    assert {r.name: r.pid for r in Stack(infra_stack.config).status()} == pids

    stopped = infra_stack.down()
    assert {name for name, was_running in stopped if was_running} == set(INFRA)
    assert not list((infra_stack.config.home / "run").glob("*.pid"))
    assert not any(r.healthy or r.pid for r in infra_stack.status())
    for name in ("nats", "openbao", "registry", "localnomad"):
        assert port_is_free("127.0.0.1", infra_stack.config.ports[name]), name


def test_openbao_secret_survives_restart(tmp_path: Path) -> None:
    config = StackConfig.for_tests(tmp_path / "home", components=("openbao",),
                                   openbao_mode="persistent")
    stack = Stack(config)
    try:
        assert stack.up().ok
        keys = config.home / "openbao" / "init.json"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
        client = hvac.Client(url=config.vault_addr, token=config.vault_token())
        client.secrets.kv.v2.create_or_update_secret(
            path="apps/survivor", secret={"DATABASE_URL": "postgres://x"}, mount_point="secret",
        )
        stack.down()
        assert not Stack(config).component("openbao").probe()

        restarted = Stack(config).up()
        assert restarted.ok, restarted.failed
        assert restarted.steps[0].outcome == "started"
        client = hvac.Client(url=config.vault_addr, token=config.vault_token())
        read = client.secrets.kv.v2.read_secret_version(
            path="apps/survivor", mount_point="secret", raise_on_deleted_version=True,
        )
        assert read["data"]["data"] == {"DATABASE_URL": "postgres://x"}
    finally:
        stack.down()


def test_taken_port_fails_naming_the_component_and_its_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = StackConfig.for_tests(home, components=("nats", "registry"))
    config.save()  # what `shaman dev up` will load: these ports, these components
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.ports["nats"]))
        squatter.listen()
        env = {**os.environ, "SHAMAN_HOME": str(home)}
        done = subprocess.run(
            [*SHAMAN, "dev", "up", "--no-services"], env=env, capture_output=True, text=True,
            timeout=120, cwd=REPO,
        )
        try:
            out = done.stdout + done.stderr
            assert done.returncode == 1, out
            assert "Traceback" not in out
            nats_line = next(line for line in out.splitlines() if "✗ nats" in line)
            assert f"port 127.0.0.1:{config.ports['nats']} is already in use" in nats_line
            assert f"log: {home / 'logs' / 'nats.log'}" in out
            assert "already in use" in (home / "logs" / "nats.log").read_text()
            # The registry does not need nats: it still starts.
            assert "✓ registry" in out
        finally:
            subprocess.run([*SHAMAN, "dev", "down"], env=env, timeout=120, check=True,
                           capture_output=True, cwd=REPO)
    assert port_is_free("127.0.0.1", config.ports["registry"])


def test_dev_env_prints_exports_with_a_stable_admin_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    StackConfig.for_tests(home).save()
    env = {k: v for k, v in os.environ.items() if k != "NOMAD_ADDR"}
    env["SHAMAN_HOME"] = str(home)

    def exports() -> dict[str, str]:
        out = subprocess.run([*SHAMAN, "dev", "env"], env=env, capture_output=True, text=True,
                             timeout=60, check=True, cwd=REPO).stdout
        pairs = [line.removeprefix("export ").split("=", 1) for line in out.splitlines()]
        return {name: value for name, value in pairs}

    first = exports()
    config = StackConfig.load(home, env)
    assert first == {
        "SHAMAN_API_URL": config.api_url,
        "SHAMAN_TOKEN": config.admin_token(),
        "NATS_URL": config.nats_url,
        "NATS_USER": "admin",
        "NATS_PASSWORD": config.nats_password("admin"),
        "NOMAD_ADDR": config.nomad_addr,
        "VAULT_ADDR": config.vault_addr,
        "SHAMAN_REGISTRY": config.registry,
    }
    assert exports() == first
    assert stat.S_IMODE((home / "admin-token").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "nats-passwords.json").stat().st_mode) == 0o600


def test_a_real_nomad_addr_replaces_localnomad(tmp_path: Path) -> None:
    config = StackConfig.load(tmp_path / "home", {"NOMAD_ADDR": "http://10.0.0.9:4646"})
    assert config.nomad_addr == "http://10.0.0.9:4646"
    assert "localnomad" not in Stack(config).names()
    own = StackConfig.load(tmp_path / "home", {"NOMAD_ADDR": "http://127.0.0.1:4646"})
    assert "localnomad" in Stack(own).names()


def test_service_env_is_the_settings_contract(tmp_path: Path) -> None:
    config = StackConfig.for_tests(tmp_path / "home")
    common = {
        "NATS_URL", "NOMAD_ADDR", "NOMAD_TOKEN", "NOMAD_NAMESPACE",
        "SHAMAN_REGISTRY", "SHAMAN_HTTP_ADDR", "SHAMAN_LOG_FORMAT", "SHAMAN_LOG_LEVEL",
        "SHAMAN_NATS_USER", "SHAMAN_NATS_PASSWORD",
    }
    vault = {"VAULT_ADDR", "VAULT_TOKEN"}
    # The watcher gets no Vault token: no platform component may read app secret values.
    extra = {"api": {"SHAMAN_ADMIN_TOKEN"} | vault,
             "builder": {"SHAMAN_BUILDER_STORAGE", "CONTAINERS_CONF"} | vault,
             "scheduler": vault}
    for service in SERVICES:
        env = service_env(config, service)
        assert set(env) == common | extra.get(service, set()), service
        assert env["SHAMAN_HTTP_ADDR"] == f"127.0.0.1:{config.ports[service]}"
        assert env["NOMAD_NAMESPACE"] == "default"
    assert service_env(config, "api")["SHAMAN_ADMIN_TOKEN"] == config.admin_token()
    # Each service logs in to NATS as its own user, with its own password.
    users = {service: service_env(config, service)["SHAMAN_NATS_USER"] for service in SERVICES}
    assert users == {service: service for service in SERVICES}
    passwords = {service_env(config, service)["SHAMAN_NATS_PASSWORD"] for service in SERVICES}
    assert len(passwords) == len(SERVICES)
    assert service_env(config, "api")["SHAMAN_NATS_PASSWORD"] == config.nats_password("api")


@pytest.mark.podman
def test_seeded_busybox_builds_hello_offline_and_it_answers(
    registry: str, container_storage: ContainerStorage, tmp_path: Path,
) -> None:
    log = tmp_path / "build.log"
    assert ensure_busybox(registry, container_storage, log) in ("pushed", "already present")
    assert manifest_exists(registry, REPOSITORY, TAG)
    assert ensure_busybox(registry, container_storage, log) == "already present"

    def podman(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(container_storage.podman(*args), env=container_storage.env(),
                              capture_output=True, text=True, timeout=120, check=False)

    # Without a local copy, the build has to pull the base from our registry: the only
    # source there is, with no internet.
    podman("rmi", "--force", busybox_ref(registry))
    ref = f"{registry}/hello:test"
    build(container_storage, REPO / "examples" / "hello", ref, log,
          build_args={"REGISTRY": registry})

    port = free_port()
    name = f"hello-test-{port}"
    started = podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                     "-e", "GREETING=Hi <tests>", ref)
    assert started.returncode == 0, started.stderr
    try:
        def health_ok() -> bool:
            response = http_request(f"http://127.0.0.1:{port}/health")
            return response is not None and response.status == 200

        wait_until(health_ok, 30, f"{name} answers /health")
        page = http_request(f"http://127.0.0.1:{port}/")
        assert page is not None and page.status == 200
        assert "Hi &lt;tests&gt;" in page.body.decode()
    finally:
        removed = podman("rm", "--force", "--time", "5", name)
        assert removed.returncode == 0, removed.stderr
