"""Fixtures for the localnomad contract tests.

Tests talk to a started localnomad process (or, with `NOMAD_ADDR` set, to a real
Nomad) only through python-nomad and aiohttp. Tests that need localnomad's test-only
control surface request the `control` fixture, which skips them against a real
Nomad. Waiting is always "until a condition holds, with a deadline".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nomad
import pytest
import requests

from devstack.ports import free_port

REPO = Path(__file__).resolve().parents[2]
REAL_NOMAD = os.environ.get("NOMAD_ADDR")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "localnomad_only: needs localnomad itself (control surface or its own "
        "process); skipped when NOMAD_ADDR points at a real Nomad")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The marker follows from the fixtures a test uses, so it cannot be forgotten.
    # This hook sees every collected test, so it only touches the ones in this folder.
    for item in items:
        if not item.nodeid.startswith("tests/localnomad/"):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        whole_module = "podman_e2e" in item.nodeid or "templates_and_persistence" in item.nodeid
        if fixtures & {"control", "private_localnomad"} or whole_module:
            item.add_marker(pytest.mark.localnomad_only)


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")


def stays_true(check: Callable[[], Any], duration: float, interval: float = 0.05,
               what: str = "condition") -> None:
    """Assert that `check` holds on every poll for `duration` seconds (a negative
    wait: something must not happen)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        value = check()
        assert value, f"{what} stopped holding: {value!r}"
        time.sleep(interval)


@dataclass
class LocalNomadProcess:
    port: int
    data_dir: Path
    proc: subprocess.Popen[str]
    args: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_localnomad(data_dir: Path, *extra: str, port: int | None = None,
                     persist: bool = True) -> LocalNomadProcess:
    port = port or free_port()
    args = [sys.executable, "-m", "devstack.localnomad", "--addr", f"127.0.0.1:{port}",
            "--runtime", "simulated", *extra]
    if persist:
        args += ["--data-dir", str(data_dir)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=open(data_dir.parent / f"ln-{port}.log", "a"),  # noqa: SIM115
                            text=True)
    assert proc.stdout is not None
    started = time.monotonic()
    line = proc.stdout.readline()
    if "localnomad ready" not in line:
        proc.kill()
        raise RuntimeError(f"localnomad did not start: {line!r}")
    # The ready line promises the API answers.
    requests.get(f"http://127.0.0.1:{port}/v1/status/leader", timeout=2).raise_for_status()
    assert time.monotonic() - started < 10
    return LocalNomadProcess(port=port, data_dir=data_dir, proc=proc, args=args)


@pytest.fixture(scope="session")
def nomad_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One shared server for the contract tests (jobs have unique IDs per test)."""
    if REAL_NOMAD:
        yield REAL_NOMAD.rstrip("/")
        return
    base = tmp_path_factory.mktemp("localnomad-shared") / "data"
    base.mkdir()
    ln = start_localnomad(base, "--heartbeat-s", "0.5")
    try:
        yield ln.url
    finally:
        ln.stop()


@pytest.fixture
def client(nomad_url: str) -> nomad.Nomad:
    u = urlparse(nomad_url)
    return nomad.Nomad(host=u.hostname, port=u.port, timeout=15)


@pytest.fixture
def control(nomad_url: str) -> Callable[..., Any]:
    """POST to localnomad's control surface; skips the test against a real Nomad."""
    if REAL_NOMAD:
        pytest.skip("needs localnomad's /_localnomad/ control surface")

    def call(path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        resp = requests.request(method, f"{nomad_url}/_localnomad/{path}", json=body or {},
                                timeout=5)
        resp.raise_for_status()
        return resp.json()

    return call


@pytest.fixture
def private_localnomad(tmp_path: Path) -> Iterator[Callable[..., LocalNomadProcess]]:
    """Start dedicated localnomad processes (fault knobs, restarts); stopped afterwards."""
    if REAL_NOMAD:
        pytest.skip("starts its own localnomad")
    started: list[LocalNomadProcess] = []

    def start(*extra: str, data_dir: Path | None = None, port: int | None = None
              ) -> LocalNomadProcess:
        d = data_dir or tmp_path / f"data-{len(started)}"
        d.mkdir(exist_ok=True)
        ln = start_localnomad(d, *extra, port=port)
        started.append(ln)
        return ln

    yield start
    for ln in started:
        ln.stop()


@pytest.fixture
def job_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


TEST_IMAGE = os.environ.get("LOCALNOMAD_TEST_IMAGE", "busybox:1.36")
MS = 1_000_000
SEC = 1_000_000_000


def service_job(job_id: str, count: int = 2, version_tag: str = "1", **update: Any
                ) -> dict[str, Any]:
    """A service job that runs on localnomad's simulated runtime and on a real Nomad
    with Docker (busybox httpd, TCP check). Small durations keep tests fast."""
    upd = {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 200 * MS,
           "HealthyDeadline": 3 * SEC, "ProgressDeadline": 6 * SEC}
    upd.update(update)
    return {
        "ID": job_id, "Name": job_id, "Type": "service", "Datacenters": ["dc1"],
        "Meta": {"release": version_tag},
        "TaskGroups": [{
            "Name": "web", "Count": count, "Update": upd,
            "RestartPolicy": {"Attempts": 0, "Interval": 60 * SEC, "Delay": 100 * MS,
                              "Mode": "fail"},
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
            "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http", "To": 8080}]}],
            "Services": [{"Name": f"{job_id}-web", "PortLabel": "http", "Provider": "nomad",
                          "Checks": [{"Name": "alive", "Type": "tcp", "Interval": 1 * SEC,
                                      "Timeout": 1 * SEC}]}],
            "Tasks": [{"Name": "app", "Driver": "docker",
                       "Config": {"image": TEST_IMAGE, "command": "httpd",
                                  "args": ["-f", "-p", "8080"], "ports": ["http"]},
                       "Env": {"RELEASE": version_tag},
                       "Resources": {"CPU": 50, "MemoryMB": 32}}],
        }],
    }
