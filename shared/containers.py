"""Podman and buildah settings that work on these VMs, in one place.

The VMs cannot raise resource limits and run cgroups in hybrid mode, so plain
`podman run` fails. Three settings fix it (see the handbook's environment.md):
the `runc` runtime, a containers.conf without default ulimits, and a storage
root of our own with one driver. buildah and podman get the same root so an
image built locally is visible to podman without a registry round trip.

Used by the builder (buildah) and by the devstack and localnomad (podman).
This module only builds command lines and environments; it runs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONTAINERS_CONF = """[containers]
default_ulimits = []

[engine]
runtime = "runc"
"""


@dataclass(frozen=True)
class ContainerStorage:
    """A containers storage root shared by podman and buildah."""

    base: Path
    driver: str = "overlay"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def runroot(self) -> Path:
        return self.base / "run"

    @property
    def conf_file(self) -> Path:
        return self.base / "containers.conf"

    def prepare(self) -> ContainerStorage:
        """Create the directories and the containers.conf; safe to call again,
        also from several processes at once (the file is replaced atomically)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.runroot.mkdir(parents=True, exist_ok=True)
        if not self.conf_file.exists() or self.conf_file.read_text() != CONTAINERS_CONF:
            tmp = self.conf_file.with_name(f".{self.conf_file.name}.{os.getpid()}.tmp")
            tmp.write_text(CONTAINERS_CONF)
            tmp.replace(self.conf_file)
        return self

    def env(
        self,
        base_env: Mapping[str, str] | None = None,
        *,
        drop_prefixes: tuple[str, ...] = (),
    ) -> dict[str, str]:
        """The environment for podman/buildah processes: `base_env` (default: this
        process's) minus variables starting with `drop_prefixes` (credentials a
        child must not inherit), plus the storage settings."""
        source = os.environ if base_env is None else base_env
        env = {k: v for k, v in source.items() if not k.startswith(drop_prefixes)}
        env["CONTAINERS_CONF"] = str(self.conf_file)
        # buildah reads BUILDAH_ISOLATION when --isolation is not given.
        env.setdefault("BUILDAH_ISOLATION", "chroot")
        return env

    def storage_args(self) -> list[str]:
        return [
            "--root", str(self.root),
            "--runroot", str(self.runroot),
            "--storage-driver", self.driver,
        ]

    def podman(self, *args: str) -> list[str]:
        """A full podman command line: `podman --runtime runc <storage> args...`."""
        return ["podman", "--runtime", "runc", *self.storage_args(), *args]

    def buildah(self, *args: str) -> list[str]:
        """A full buildah command line with the same storage."""
        return ["buildah", *self.storage_args(), *args]
