"""The dev stack supervisor: which components, on which ports, started in which order.

`StackConfig` says where the stack lives (`$SHAMAN_HOME`, else `.shaman/` in the checkout),
its ports, which components it runs and how (localnomad's runtime, OpenBao persistent or dev).
`Stack` starts each as soon as what it needs is healthy (DEPENDS_ON: nats-server, OpenBao
and the registry at once; localnomad after OpenBao, whose token it gets; the busybox base
image after the registry; the four services after what each of them uses) and waits until
each is healthy.
A component that is already running is left alone, so `up` is idempotent; `down` stops
everything it finds through the pid files.

`shaman dev` (devstack/cli.py), `make run` and the test fixtures (tests/conftest.py) all go
through this module, so the stack the tests exercise is the stack developers run.

Not here: restarting crashed processes (`up` again does that), anything remote, production
deployment (compose.yaml describes that shape).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from devstack.components.base import (
    Component,
    ComponentError,
    ComponentStatus,
    http_request,
    port_is_free,
)
from devstack.components.localnomad import LocalNomad
from devstack.components.nats import NatsServer
from devstack.components.openbao import OpenBao, OpenBaoDev, write_private
from devstack.components.registry import Registry
from devstack.components.service import SERVICES, ShamanService
from devstack.nats_permissions import USERS as NATS_USERS
from devstack.nats_permissions import authorization_block
from devstack.podman import ContainerStorage
from devstack.ports import free_port

INFRA = ("nats", "openbao", "registry", "localnomad")
ALL_COMPONENTS = (*INFRA, *SERVICES)
#: What `up` reports on, in report order: the components and the base-image seeding.
ALL_STEPS = (*INFRA, "seed", *SERVICES)

DEFAULT_PORTS: dict[str, int] = {
    "nats": 4222,
    "nats_monitor": 8222,
    "openbao": 8200,
    "openbao_cluster": 8201,
    "registry": 5000,
    "localnomad": 4646,
    "api": 8080,
    "builder": 8081,
    "scheduler": 8082,
    "watcher": 8083,
}

CONFIG_FILE = "stack.json"

#: podman refuses a longer runroot (its sockets live under it); localnomad checks the same.
MAX_RUNROOT_CHARS = 50

#: What each step cannot start without. A step starts once these are healthy, and is skipped
#: when one failed. Every service needs OpenBao: its environment carries OpenBao's token.
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "localnomad": ("openbao",),
    "seed": ("registry",),
    "api": ("nats", "openbao"),
    "builder": ("nats", "openbao", "registry", "seed"),
    "scheduler": ("nats", "openbao", "localnomad"),
    "watcher": ("nats", "openbao", "localnomad"),
}


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """`$SHAMAN_HOME`, else `.shaman/` at the root of this checkout, else in the cwd."""
    environ = os.environ if environ is None else environ
    if environ.get("SHAMAN_HOME"):
        return Path(environ["SHAMAN_HOME"]).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout / ".shaman"
    return Path.cwd() / ".shaman"


def free_port_pair() -> int:
    """A free port whose successor is free too (OpenBao's dev mode takes port + 1)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and _bindable(port + 1):
            return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def _bindable(port: int) -> bool:
    return port_is_free("127.0.0.1", port)


@dataclass(frozen=True)
class StackConfig:
    """Everything that decides what `up` starts and where; persisted in HOME/stack.json."""

    home: Path
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    host: str = "127.0.0.1"
    #: Which of ALL_COMPONENTS to run; tests leave out the services they do not need.
    components: tuple[str, ...] = ALL_COMPONENTS
    #: localnomad's runtime: "podman" runs real containers, "simulated" pretends.
    runtime: str = "podman"
    #: "persistent" (raft on disk, init + unseal) for `dev up`; "dev" (in memory) for tests.
    openbao_mode: str = "persistent"
    #: A real Nomad to use instead of localnomad (from NOMAD_ADDR at `up` time).
    external_nomad_addr: str | None = None
    nomad_token: str = ""
    nomad_namespace: str = "default"
    #: Build and push the busybox base image into the registry during `up`.
    seed_images: bool = True

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def load(
        cls, home: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> StackConfig:
        """The stack's saved config (what the last `up` used), else the defaults.

        NOMAD_ADDR / NOMAD_TOKEN / NOMAD_NAMESPACE from the environment are applied on top:
        a NOMAD_ADDR that is not our own localnomad's address names a real Nomad.
        """
        environ = os.environ if environ is None else environ
        home = home or default_home(environ)
        config = cls(home=home)
        saved = home / CONFIG_FILE
        if saved.exists():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                data = json.loads(saved.read_text())
                config = replace(
                    config,
                    ports={**DEFAULT_PORTS, **{k: int(v) for k, v in data["ports"].items()}},
                    components=tuple(data.get("components", ALL_COMPONENTS)),
                    runtime=str(data.get("runtime", "podman")),
                    openbao_mode=str(data.get("openbao_mode", "persistent")),
                    external_nomad_addr=data.get("external_nomad_addr"),
                    nomad_namespace=str(data.get("nomad_namespace", "default")),
                    seed_images=bool(data.get("seed_images", True)),
                )
        return config.with_nomad_from(environ)

    def with_nomad_from(self, environ: Mapping[str, str]) -> StackConfig:
        addr = environ.get("NOMAD_ADDR", "").rstrip("/")
        own = f"http://{self.host}:{self.ports['localnomad']}"
        external = addr if addr and addr != own else None
        if "NOMAD_ADDR" not in environ:
            # Unset now: keep what the running stack was started with, so `down`/`env` in a
            # fresh shell still describe it.
            external = self.external_nomad_addr
        return replace(
            self,
            external_nomad_addr=external,
            nomad_token=environ.get("NOMAD_TOKEN", self.nomad_token),
            nomad_namespace=environ.get("NOMAD_NAMESPACE", self.nomad_namespace),
        )

    @classmethod
    def for_tests(
        cls,
        home: Path,
        components: Iterable[str] = ALL_COMPONENTS,
        runtime: str = "simulated",
        openbao_mode: str = "dev",
        seed_images: bool = False,
    ) -> StackConfig:
        """Free ports everywhere, so tests never meet a stack `make run` left running."""
        ports = {name: free_port() for name in DEFAULT_PORTS}
        if openbao_mode == "dev":
            ports["openbao"] = free_port_pair()
            ports["openbao_cluster"] = ports["openbao"] + 1
        return cls(
            home=home, ports=ports, components=tuple(components), runtime=runtime,
            openbao_mode=openbao_mode, seed_images=seed_images,
        )

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        data = {
            "ports": dict(self.ports),
            "components": list(self.components),
            "runtime": self.runtime,
            "openbao_mode": self.openbao_mode,
            "external_nomad_addr": self.external_nomad_addr,
            "nomad_namespace": self.nomad_namespace,
            "seed_images": self.seed_images,
        }
        (self.home / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")

    # -- addresses ---------------------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.ports['nats']}"

    @property
    def vault_addr(self) -> str:
        return f"http://{self.host}:{self.ports['openbao']}"

    @property
    def registry(self) -> str:
        """host:port, as in image references and SHAMAN_REGISTRY."""
        return f"{self.host}:{self.ports['registry']}"

    @property
    def nomad_addr(self) -> str:
        return self.external_nomad_addr or f"http://{self.host}:{self.ports['localnomad']}"

    @property
    def runs_localnomad(self) -> bool:
        return "localnomad" in self.components and self.external_nomad_addr is None

    def http_addr(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    @property
    def api_url(self) -> str:
        return f"http://{self.http_addr('api')}"

    @property
    def storage(self) -> ContainerStorage:
        """Podman/buildah storage shared by localnomad, the builder and `dev` builds.

        `HOME/containers`, unless that makes podman's runroot longer than it accepts (unix
        socket paths under it are limited to 108 bytes): then a directory in the system's
        temp dir named after the home, so every command for this stack still finds it.
        """
        base = self.home / "containers"
        if len(str(ContainerStorage(base).runroot)) > MAX_RUNROOT_CHARS:
            digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
            base = Path(tempfile.gettempdir()) / f"shaman-containers-{digest}"
        return ContainerStorage(base)

    # -- secrets the stack generates -----------------------------------------------------------

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin-token"

    def admin_token(self) -> str:
        """The api's bootstrap admin token: generated once, kept 0600 in HOME/admin-token."""
        return _token_file(self.admin_token_path)

    @property
    def nats_passwords_path(self) -> Path:
        return self.home / "nats-passwords.json"

    def nats_passwords(self) -> dict[str, str]:
        """Every NATS user's password (devstack/nats_permissions.py USERS): generated once,
        kept 0600 in HOME/nats-passwords.json; a user added later gets one on first use."""
        path = self.nats_passwords_path
        try:
            saved = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            saved = {}
        passwords = {
            user: str(saved.get(user) or secrets.token_urlsafe(24)) for user in NATS_USERS
        }
        if passwords != saved:
            write_private(path, json.dumps(passwords, indent=2) + "\n")
        return passwords

    def nats_password(self, user: str) -> str:
        return self.nats_passwords()[user]

    def vault_token(self) -> str:
        """The token services use for OpenBao: its root token (local development only)."""
        if "openbao" not in self.components:
            return ""
        if self.openbao_mode == "dev":
            return _token_file(self.home / "openbao-dev-token")
        return OpenBao(self.home, self.ports["openbao"], self.ports["openbao_cluster"]).root_token


def _token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if not token:
        token = secrets.token_urlsafe(32)
        write_private(path, token + "\n")
    return token


@dataclass(frozen=True)
class StepResult:
    """What `up` did with one component (or the seed step)."""

    name: str
    #: started, already running, pushed, already present, external, failed or skipped
    outcome: str
    seconds: float
    error: str = ""
    log_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.outcome not in ("failed", "skipped")


@dataclass
class UpResult:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def failed(self) -> list[StepResult]:
        return [step for step in self.steps if not step.ok]


class StackError(RuntimeError):
    """`up` left something unhealthy; the message lists each failure and its log."""

    def __init__(self, result: UpResult) -> None:
        self.result = result
        lines = [f"{step.name}: {step.error}" for step in result.failed]
        super().__init__("the stack is not healthy:\n" + "\n".join(lines))


class Stack:
    """Starts, inspects and stops the components of one StackConfig."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        # Components are kept so that the process handles of what this object started (the
        # tests' case) are used again by `down`, which can then reap them.
        self._components: dict[str, Component] = {}

    # -- components ---------------------------------------------------------------------------

    def component(self, name: str) -> Component:
        if name not in self._components:
            self._components[name] = self._make(name)
        return self._components[name]

    def _component_to_launch(self, name: str) -> Component:
        """Like component(), but rebuilt when not running: its launch settings (OpenBao's
        root token, known only once OpenBao is initialised) may have changed since."""
        component = self.component(name)
        if isinstance(component, ShamanService | LocalNomad) and not component.is_running():
            component = self._components[name] = self._make(name)
        return component

    def _make(self, name: str) -> Component:
        c, home, ports = self.config, self.config.home, self.config.ports
        if name == "nats":
            return NatsServer(
                home, ports["nats"], ports["nats_monitor"], host=c.host,
                authorization=authorization_block(c.nats_passwords()),
            )
        if name == "openbao":
            if c.openbao_mode == "dev":
                return OpenBaoDev(home, ports["openbao"], root_token=c.vault_token(), host=c.host)
            return OpenBao(home, ports["openbao"], ports["openbao_cluster"], host=c.host)
        if name == "registry":
            return Registry(home, ports["registry"], host=c.host)
        if name == "localnomad":
            return LocalNomad(
                home, ports["localnomad"], runtime=c.runtime, storage=c.storage,
                vault_addr=c.vault_addr if "openbao" in c.components else None,
                vault_token=c.vault_token() or None,
                registry=c.registry if "registry" in c.components else None, host=c.host,
            )
        if name in SERVICES:
            from devstack.service_env import service_env

            return ShamanService(name, home, service_env(c, name))
        raise KeyError(f"unknown component {name!r}")

    def names(self) -> list[str]:
        """The configured components in start order (localnomad dropped for a real Nomad)."""
        return [
            name for name in ALL_COMPONENTS
            if name in self.config.components
            and (name != "localnomad" or self.config.runs_localnomad)
        ]

    # -- up -----------------------------------------------------------------------------------

    def up(self, on_step: Callable[[StepResult], None] | None = None) -> UpResult:
        """Start what is not running, wait until everything is healthy, report each step.

        Each step starts as soon as the steps it needs (DEPENDS_ON) are healthy, each in its
        own thread, so independent ones overlap (the services start while the base image is
        being seeded). A step whose dependency failed is skipped with that reason; the others
        still start, so one broken piece does not hide the state of the rest. `on_step` is
        called as steps finish; `result.steps` is in start order. Never raises
        ComponentError: failures are in the result (`result.ok`, `result.failed`).
        """
        self.config.home.mkdir(parents=True, exist_ok=True)
        self.config.save()
        # Generated once, here, before threads could race to create the files.
        self.config.admin_token()
        self.config.nats_passwords()
        if self.config.openbao_mode == "dev":
            self.config.vault_token()
        if "builder" in self.config.components or self.config.runs_localnomad:
            # The builder only gets the path; the directories and containers.conf must exist.
            self.config.storage.prepare()

        names = self.names()
        order = [n for n in names if n in INFRA]
        if self.config.seed_images and "registry" in names:
            order.append("seed")
        order += [n for n in names if n in SERVICES]

        result = UpResult()
        lock = threading.Lock()
        started_at = time.monotonic()

        def record(step: StepResult) -> StepResult:
            with lock:
                if on_step is not None:
                    on_step(step)
            return step

        external: list[StepResult] = []
        if "localnomad" in self.config.components and not self.config.runs_localnomad:
            external.append(record(
                StepResult("localnomad", "external", 0.0, self.config.nomad_addr)
            ))

        def run(name: str, needs: dict[str, Future[StepResult]]) -> StepResult:
            broken = [dep for dep, future in needs.items() if not future.result().ok]
            if broken:
                return record(StepResult(name, "skipped", 0.0, f"needs {', '.join(broken)}"))
            if name == "seed":
                return record(self._seed(started_at))
            return record(self._start_one(name, started_at))

        futures: dict[str, Future[StepResult]] = {}
        with ThreadPoolExecutor(max_workers=len(order) or 1, thread_name_prefix="up") as pool:
            for name in order:
                needs = {d: futures[d] for d in DEPENDS_ON.get(name, ()) if d in futures}
                futures[name] = pool.submit(run, name, needs)
        result.steps = external + [futures[name].result() for name in order]
        result.steps.sort(key=lambda step: ALL_STEPS.index(step.name))
        return result

    def _start_one(self, name: str, started_at: float) -> StepResult:
        """Launch one component (unless running) and wait until it is healthy."""
        component = self._component_to_launch(name)
        try:
            outcome = component.launch()
            component.wait_healthy()
        except ComponentError as error:
            return StepResult(
                name, "failed", time.monotonic() - started_at, error.problem, error.log_path
            )
        return StepResult(name, outcome, time.monotonic() - started_at, "", component.log_path)

    def _seed(self, started_at: float) -> StepResult:
        from devstack.images import ImageError
        from devstack.seed import ensure_busybox

        log_path = self.config.home / "logs" / "seed.log"
        try:
            outcome = ensure_busybox(self.config.registry, self.config.storage, log_path)
        except ImageError as error:
            return StepResult("seed", "failed", time.monotonic() - started_at, str(error), log_path)
        return StepResult("seed", outcome, time.monotonic() - started_at, "", log_path)

    def up_or_raise(self) -> UpResult:
        result = self.up()
        if not result.ok:
            raise StackError(result)
        return result

    # -- status and down ------------------------------------------------------------------------

    def status(self) -> list[ComponentStatus]:
        rows = []
        for name in self.names():
            rows.append(self.component(name).status())
        if "localnomad" in self.config.components and not self.config.runs_localnomad:
            rows.insert(
                min(3, len(rows)),
                ComponentStatus(
                    "localnomad", None, 0, _nomad_answers(self.config.nomad_addr),
                    self.config.home / "logs" / "localnomad.log", "external",
                    self.config.nomad_addr,
                ),
            )
        return rows

    def down(
        self, timeout_s: float | None = None, keep_containers: bool = False
    ) -> list[tuple[str, bool]]:
        """Stop every component: services, then localnomad, then the infrastructure.

        localnomad leaves its app containers running when it stops (so that a restarted
        localnomad re-adopts them); `down` removes them afterwards unless `keep_containers`,
        because "the stack is down" should mean nothing of it still listens.

        Components of one group stop in parallel, so one slow shutdown (which ends in SIGKILL
        after its deadline) does not add up with the others'. Goes through all of
        ALL_COMPONENTS, not only the configured ones, so a component left over from an
        earlier config is stopped too. Returns (name, was running) in stop order.
        """
        groups = [list(reversed(SERVICES)), ["localnomad"], ["registry", "openbao", "nats"]]
        stopped: list[tuple[str, bool]] = []
        errors: list[str] = []

        def stop(name: str) -> tuple[str, bool] | str:
            try:
                return name, self.component(name).stop(timeout_s)
            except ComponentError as error:
                return str(error)

        for group in groups:
            for name in group:
                self.component(name)  # built here, not concurrently in the threads
            with ThreadPoolExecutor(max_workers=len(group)) as pool:
                for outcome in pool.map(stop, group):
                    if isinstance(outcome, str):
                        errors.append(outcome)
                    else:
                        stopped.append(outcome)
            if group == ["localnomad"] and not keep_containers:
                removed = self.remove_app_containers()
                if removed:
                    stopped.append((f"{removed} app container(s)", True))
        if errors:
            raise RuntimeError("; ".join(errors))
        return stopped


    def remove_app_containers(self) -> int:
        """Remove the containers localnomad started in this stack's storage; return how many."""
        storage = self.config.storage
        if not storage.conf_file.exists() or shutil.which("podman") is None:
            return 0
        label = "label=localnomad.alloc"
        listed = subprocess.run(
            storage.podman("ps", "--all", "--quiet", "--filter", label), env=storage.env(),
            capture_output=True, text=True, timeout=60, check=False,
        )
        ids = listed.stdout.split()
        if listed.returncode != 0 or not ids:
            return 0
        subprocess.run(
            storage.podman("rm", "--force", "--time", "10", *ids), env=storage.env(),
            capture_output=True, timeout=120, check=False,
        )
        return len(ids)


def _nomad_answers(addr: str) -> bool:
    response = http_request(addr.rstrip("/") + "/v1/status/leader")
    return response is not None and response.status == 200
