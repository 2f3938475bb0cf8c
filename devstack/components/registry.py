"""The OCI image registry (Debian's `docker-registry`, the CNCF distribution registry).

Plain HTTP on 127.0.0.1 with a filesystem root under the stack home and deletes enabled, so
images can be cleaned up. Health is `GET /v2/` → 200. Clients push and pull with
`--tls-verify=false`, which is fine for a registry that only listens on loopback.

Not here: TLS, authentication, garbage collection (`docker-registry garbage-collect CONFIG`
can be run by hand while the registry is stopped).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack.components.base import Component


class Registry(Component):
    start_timeout_s = 15.0

    def __init__(
        self, home: Path, port: int, host: str = "127.0.0.1", name: str = "registry"
    ) -> None:
        super().__init__(name, home, port, host)

    @property
    def address(self) -> str:
        """host:port, the form image references and SHAMAN_REGISTRY use."""
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "config.yml"

    @property
    def storage_dir(self) -> Path:
        return self.state_dir / "storage"

    def preflight(self) -> None:
        if shutil.which("docker-registry") is None:
            raise self.error(
                "the docker-registry binary is not installed (Debian package docker-registry; "
                "scripts/install.sh installs it)"
            )

    def prepare(self) -> None:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "# Written by shaman devstack on every start; edit devstack/components/registry.py.\n"
            "version: 0.1\n"
            "log:\n"
            "  level: info\n"
            "  accesslog:\n"
            "    disabled: true\n"
            "storage:\n"
            "  filesystem:\n"
            f'    rootdirectory: "{self.storage_dir}"\n'
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f'  addr: "{self.address}"\n'
        )

    def command(self) -> list[str]:
        return ["docker-registry", "serve", str(self.config_path)]

    def probe(self) -> bool:
        return self.http_ok("/v2/")
