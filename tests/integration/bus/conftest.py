"""A private nats-server per test module for the bus runtime tests."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.ports import free_port

VENV_BIN = Path(__file__).resolve().parents[3] / ".venv" / "bin"


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("nats")
    port, mon = free_port(), free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "nats-server"), "-a", "127.0.0.1", "-p", str(port), "-m", str(mon),
         "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mon}/healthz?js-enabled-only=true",
                                        timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("nats-server did not become healthy") from None
            time.sleep(0.02)
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
