"""The chaos stack: the devstack's own `Stack`, with small timings and process-level faults.

`ChaosStack` starts every component (nats-server, OpenBao dev, the registry, localnomad
with the simulated runtime, the four services) through `devstack.stack.Stack` on free
ports (below the kernel's ephemeral range, so a restarted component gets its port back)
in a temp home, exactly as `shaman dev up` would, except that each service gets a
few extra environment variables: tiny ack waits, relist and resync intervals, so that a
killed process is replaced and its work redelivered within seconds. It then lets a
scenario act on single processes through their pid files:

- `kill(name)`: SIGKILL to the process group (a crash; nothing is flushed or acked);
- `pause(name)` / `resume(name)`: SIGSTOP / SIGCONT (a GC or VM pause);
- `start(name, **env)`: start it again, optionally with one-off settings such as
  `SHAMAN_CRASHPOINT` (the service then exits with 137 at that point by itself);
- `add_builder(...)`: a second builder copy (own port, own buildah storage, own log).

Not here: what is injected into Nomad (localnomad's control surface, observe.py) and
what is checked afterwards (invariants.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from devstack.components.base import Component, port_is_free
from devstack.components.service import SERVICES, ShamanService
from devstack.podman import ContainerStorage
from devstack.service_env import service_env
from devstack.stack import ALL_COMPONENTS, DEFAULT_PORTS, Stack, StackConfig
from tests.chaos.waiting import wait_for_sync

#: Per-service settings of every chaos stack (the env names of shared.settings).
#: Small ack waits and intervals: a crashed process's work comes back in seconds.
DEFAULT_ENV: dict[str, dict[str, str]] = {
    "api": {
        "SHAMAN_NATS_REQUEST_TIMEOUT_S": "2",
        "SHAMAN_RATE_LIMIT_PER_S": "1000",
        "SHAMAN_RATE_LIMIT_BURST": "5000",
        "SHAMAN_INSTANCE_ID": "api-1",
    },
    "builder": {
        "SHAMAN_ACK_WAIT_S": "3",
        "SHAMAN_RETENTION_INTERVAL_S": "0",
        "SHAMAN_BUILDER_CONCURRENCY": "4",
        "SHAMAN_INSTANCE_ID": "builder-1",
    },
    "scheduler": {
        "SHAMAN_ACK_WAIT_S": "3",
        "SHAMAN_RESYNC_INTERVAL_S": "2",
        "SHAMAN_REDRIVE_INTERVAL_S": "2",
        "SHAMAN_REQUEUE_MAX_S": "1",
        "SHAMAN_COMMAND_RECONCILE_WAIT_S": "5",
        "SHAMAN_NOMAD_TIMEOUT_S": "5",
        "SHAMAN_INSTANCE_ID": "scheduler-1",
    },
    "watcher": {
        "SHAMAN_RELIST_INTERVAL_S": "2",
        "SHAMAN_DEADLINE_GRACE_S": "2",
        "SHAMAN_STREAM_BACKOFF_MAX_S": "1",
        "SHAMAN_ROLLBACK_REPUBLISH_AFTER_S": "5",
        "SHAMAN_CHECKPOINT_INTERVAL_S": "0.2",
        # A bad release is failed at its first crash, not after Nomad's 15 s restart delay.
        "SHAMAN_FAIL_FAST_RESTARTS": "1",
        "SHAMAN_CRASH_LOOP_WINDOW_S": "2",
        "SHAMAN_NOMAD_TIMEOUT_S": "5",
        "SHAMAN_INSTANCE_ID": "watcher-1",
    },
}


class _EnvStack(Stack):
    """A Stack whose services get `env[name]` on top of the devstack's contract env."""

    def __init__(self, config: StackConfig, env: Mapping[str, dict[str, str]]) -> None:
        super().__init__(config)
        self.env = env

    def _make(self, name: str) -> Component:
        if name in SERVICES:
            return ShamanService(name, self.config.home,
                                 {**service_env(self.config, name), **self.env[name]})
        return super()._make(name)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def restartable_port(taken: set[int], pair: bool = False) -> int:
    """A free port below the kernel's ephemeral range.

    A component restarted by a scenario must get its own port back. A port from the
    ephemeral range (what `free_port()` returns) can be handed to any outgoing connection
    while its server is down (a service reconnecting to NATS, the tap, a probe), and the
    restart then fails with "address in use". Ports below the range are never handed out
    that way. `pair`: port + 1 must be free too (OpenBao's dev mode takes it).
    """
    high = min(_ephemeral_low(), 65536) - 2
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(12000, max(12001, high))
        wanted = (port, port + 1) if pair else (port,)
        if any(p in taken for p in wanted):
            continue
        if all(port_is_free("127.0.0.1", p) for p in wanted):
            taken.update(wanted)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def restartable_ports() -> dict[str, int]:
    taken: set[int] = set()
    ports = {name: restartable_port(taken) for name in DEFAULT_PORTS
             if name not in ("openbao", "openbao_cluster")}
    ports["openbao"] = restartable_port(taken, pair=True)
    ports["openbao_cluster"] = ports["openbao"] + 1
    return ports


class ChaosStack:
    """One whole stack for one test module (or one soak run)."""

    def __init__(
        self, home: Path, env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.home = home
        self.config = StackConfig(
            home=home, ports=restartable_ports(), components=ALL_COMPONENTS,
            runtime="simulated", openbao_mode="dev", seed_images=False,
        )
        overrides = env or {}
        self.env: dict[str, dict[str, str]] = {
            name: {**DEFAULT_ENV[name], **overrides.get(name, {})} for name in SERVICES
        }
        self._stack = _EnvStack(self.config, self.env)
        self.extra: dict[str, ShamanService] = {}
        self._extra_storage: list[Path] = []
        self._one_off: set[str] = set()  # services running with one-off settings

    # -- addresses -----------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.config.api_url

    @property
    def admin_token(self) -> str:
        return self.config.admin_token()

    @property
    def nats_url(self) -> str:
        return self.config.nats_url

    @property
    def nomad_addr(self) -> str:
        return self.config.nomad_addr

    def nats_options(self) -> dict[str, str]:
        """Connect options for the harness's own NATS clients: the `admin` user when the
        stack's nats-server has users (devstack/nats_permissions.py), else nothing."""
        passwords = getattr(self.config, "nats_passwords", None)
        if passwords is None:
            return {}
        return {"user": "admin", "password": passwords()["admin"]}

    @property
    def registry(self) -> str:
        return self.config.registry

    @property
    def vault_addr(self) -> str:
        return self.config.vault_addr

    @property
    def vault_token(self) -> str:
        return self.config.vault_token()

    def log_files(self) -> list[Path]:
        """Every log under the stack home: the components', the extra copies', all."""
        return sorted(p for p in self.home.rglob("*.log") if p.is_file())

    # -- lifecycle -------------------------------------------------------------------------

    def up(self) -> None:
        self._stack.up_or_raise()

    def down(self) -> None:
        # A stopped (SIGSTOP) process would only die at the SIGKILL deadline.
        for name in (*self.extra, *self._stack.names()):
            with contextlib.suppress(Exception):
                self.signal(name, signal.SIGCONT)
        for service in self.extra.values():
            with contextlib.suppress(Exception):
                service.stop(timeout_s=5)
        self.extra.clear()
        try:
            self._stack.down(timeout_s=5)
        finally:
            for path in self._extra_storage:
                shutil.rmtree(path, ignore_errors=True)
            storage = self.config.storage.base
            if storage.name.startswith("shaman-containers-"):  # ours, hashed from our home
                shutil.rmtree(storage, ignore_errors=True)

    def component(self, name: str) -> Component:
        if name in self.extra:
            return self.extra[name]
        return self._stack.component(name)

    def pid(self, name: str) -> int | None:
        return self.component(name).pid()

    def running(self, name: str) -> bool:
        return self.component(name).is_running()

    # -- faults ----------------------------------------------------------------------------

    def signal(self, name: str, sig: signal.Signals) -> int:
        """Send `sig` to the component's whole process group; return the pid."""
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        try:
            os.killpg(pid, sig)
        except PermissionError:
            os.kill(pid, sig)
        return pid

    def kill(self, name: str, timeout_s: float = 10.0) -> None:
        """SIGKILL (a crash), then wait until the process is gone and reaped."""
        component = self.component(name)
        self.signal(name, signal.SIGKILL)
        self.wait_exited(name, timeout_s)
        component._forget()  # the pid file of a dead process

    def pause(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    def wait_exited(self, name: str, timeout_s: float = 30.0) -> None:
        component = self.component(name)
        deadline = time.monotonic() + timeout_s
        while component.is_running():
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} still running after {timeout_s}s")
            time.sleep(0.05)  # polling a process, not waiting for an event

    def start(self, name: str, **env: str) -> None:
        """Start a stopped component and wait until it is healthy.

        For a service, `env` replaces settings for this start only (e.g.
        SHAMAN_CRASHPOINT="after_nomad_register"); the next `start` goes back to the
        module's settings.
        """
        self._wait_port_free(self.component(name))
        if name in self.extra:
            self.extra[name].start()
            return
        if name in SERVICES:
            base = dict(self.env[name])
            self.env[name].update(env)
            if env:
                self._one_off.add(name)
            else:
                self._one_off.discard(name)
            try:
                self._stack._components.pop(name, None)  # rebuilt with the env above
                self._stack.component(name).start()
            finally:
                self.env[name].clear()
                self.env[name].update(base)
            return
        self.component(name).start()

    def heal(self) -> list[str]:
        """Back to the module's normal: nothing stopped (SIGSTOP), every component running,
        no service left with one-off settings (an armed crash point). Returns what it did,
        so that a scenario that failed half-way does not break the next one."""
        done: list[str] = []
        for name in (*self._stack.names(), *self.extra):
            with contextlib.suppress(Exception):
                self.signal(name, signal.SIGCONT)
        for name in self._stack.names():
            if name in self._one_off and self.running(name):
                self.kill(name)
            if not self.running(name):
                self.start(name)
                done.append(name)
        return done

    @staticmethod
    def _wait_port_free(component: Component, timeout_s: float = 20.0) -> None:
        """Wait until a dead component's port can be bound again.

        Right after a kill its accepted connections linger a moment in FIN_WAIT (only
        TIME_WAIT is exempt from "address in use"), so an immediate start can fail.
        """
        ports = (component.port, *component.extra_ports())
        wait_for_sync(lambda: all(port_is_free(component.host, p) for p in ports),
                      timeout_s, f"{component.name}'s port(s) {ports} to be free")

    def restart(self, name: str, **env: str) -> None:
        """kill -9 and start again."""
        if self.running(name):
            self.kill(name)
        self.start(name, **env)

    def add_builder(self, name: str = "builder-2", **env: str) -> ShamanService:
        """A second builder copy sharing the `builders` durable; started, healthy."""
        storage = ContainerStorage(Path(tempfile.mkdtemp(prefix="chb-", dir="/tmp"))).prepare()
        self._extra_storage.append(storage.base)
        service_vars = {
            **service_env(self.config, "builder"),
            **self.env["builder"],
            "SHAMAN_HTTP_ADDR":
                f"{self.config.host}:{restartable_port(set(self.config.ports.values()))}",
            "SHAMAN_INSTANCE_ID": name,
            "SHAMAN_BUILDER_STORAGE": str(storage.base),
            "CONTAINERS_CONF": str(storage.conf_file),
            **env,
        }
        service = ShamanService("builder", self.home / name, service_vars)
        self.extra[name] = service
        service.start()
        return service
