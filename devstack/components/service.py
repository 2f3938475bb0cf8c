"""One Shaman service (`shaman-api`, `-builder`, `-scheduler`, `-watcher`) as a component.

The service gets its whole configuration from the environment built by
`devstack.service_env.service_env` (the contract the shared settings object reads); this
module adds nothing to it. Health is `GET http://$SHAMAN_HTTP_ADDR/healthz` → 200.

A service whose module does not exist yet fails its preflight with a clear message instead of
being launched to die with a traceback in its log.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from devstack.components.base import Component
from devstack.components.localnomad import console_script

SERVICES = ("api", "builder", "scheduler", "watcher")


class ShamanService(Component):
    start_timeout_s = 30.0

    def __init__(self, service: str, home: Path, env: Mapping[str, str]) -> None:
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
        http_addr = env["SHAMAN_HTTP_ADDR"]
        host, port = http_addr.rsplit(":", 1)
        super().__init__(service, home, int(port), host)
        self.service = service
        self.service_env = dict(env)

    @property
    def module(self) -> str:
        return f"services.{self.service}.__main__"

    def preflight(self) -> None:
        try:
            found = importlib.util.find_spec(self.module) is not None
        except ImportError:
            found = False
        if not found:
            raise self.error(
                f"shaman-{self.service} is not installed yet ({self.module} is missing)"
            )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.service_env)
        return env

    def command(self) -> list[str]:
        return [console_script(f"shaman-{self.service}")]

    def probe(self) -> bool:
        return self.http_ok("/healthz")
