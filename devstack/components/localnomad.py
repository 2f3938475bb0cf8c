"""localnomad, the project's Nomad stand-in (`shaman-localnomad`), as a devstack component.

This module only launches and probes it: `--addr`, `--runtime podman|simulated`, `--data-dir`,
the Vault flags, the stack's podman storage (`--podman-root`, the builder's too, so both see
the same images) and the local registry (`--registry-insecure`: plain HTTP on loopback).
Health is `GET /v1/status/leader` → 200, as on a real Nomad.

Not here: localnomad itself (devstack/localnomad/), and anything for a real Nomad. When
NOMAD_ADDR names a real cluster the stack does not create this component at all.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from devstack.components.base import Component
from devstack.podman import ContainerStorage


def console_script(name: str) -> str:
    """A console script of this project: the one beside our Python first, then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    return shutil.which(name) or name


class LocalNomad(Component):
    start_timeout_s = 30.0

    def __init__(
        self,
        home: Path,
        port: int,
        *,
        runtime: str,
        storage: ContainerStorage,
        vault_addr: str | None = None,
        vault_token: str | None = None,
        registry: str | None = None,
        host: str = "127.0.0.1",
        name: str = "localnomad",
    ) -> None:
        super().__init__(name, home, port, host)
        if runtime not in ("podman", "simulated"):
            raise ValueError(f"runtime must be podman or simulated, not {runtime!r}")
        self.runtime = runtime
        self.storage = storage
        self.vault_addr = vault_addr
        self.vault_token = vault_token
        self.registry = registry

    @property
    def addr(self) -> str:
        return self.http_base

    def preflight(self) -> None:
        if importlib.util.find_spec("devstack.localnomad.__main__") is None:
            raise self.error(
                "shaman-localnomad is not installed yet (devstack/localnomad/__main__.py "
                "is missing)"
            )
        if self.runtime == "podman" and shutil.which("podman") is None:
            raise self.error("the podman runtime needs podman (scripts/install.sh installs it)")

    def prepare(self) -> None:
        if self.runtime == "podman":
            self.storage.prepare()

    def env(self) -> dict[str, str]:
        return self.storage.env()

    def command(self) -> list[str]:
        command = [
            console_script("shaman-localnomad"),
            "--addr", f"{self.host}:{self.port}",
            "--runtime", self.runtime,
            "--data-dir", str(self.state_dir / "data"),
        ]
        if self.runtime == "podman":
            # The same storage as the builder's, so a freshly built image needs no pull.
            command += ["--podman-root", str(self.storage.base)]
        if self.registry:
            command += ["--registry-insecure", self.registry]
        if self.vault_addr:
            command += ["--vault-addr", self.vault_addr]
        if self.vault_token:
            # One argument: a generated token may start with "-", which argparse would
            # take for an option of its own (1 start in 64 failed that way).
            command.append(f"--vault-token={self.vault_token}")
        return command

    def probe(self) -> bool:
        return self.http_ok("/v1/status/leader")
