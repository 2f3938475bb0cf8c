"""Fixtures that start real servers for the tests, through the devstack's own component code.

Every server runs on free ports (devstack.ports.free_port) with its state in a pytest temp
directory, so the tests never touch a stack that `make run` left running, nor each other's
state across sessions. Servers are session-scoped (starting them is the slow part) and stopped
at the end; tests share them by using unique names (subjects, streams, apps, secret paths).

- `nats_server` → NATS URL (JetStream on a file store)
- `openbao` → `VaultServer(addr, token)` (dev mode: in memory, KV v2 at `secret/`)
- `registry` → "host:port"
- `container_storage` → a prepared `ContainerStorage` for podman/buildah
- `localnomad_simulated`, `localnomad_podman` → Nomad API address
- `shaman_stack` → `ShamanStack`: everything above plus the four services, started by the
  same `devstack.stack.Stack` that `shaman dev up` uses

Also here: an autouse check that fails an async test which leaves asyncio tasks running.

Not here: fixtures of one test package (those live in that package's conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from devstack.components.base import Component
from devstack.components.localnomad import LocalNomad
from devstack.components.nats import NatsServer
from devstack.components.openbao import OpenBaoDev
from devstack.components.registry import Registry
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from devstack.stack import ALL_COMPONENTS, Stack, StackConfig, free_port_pair

# -- servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def running(component: Component) -> Iterator[Component]:
    """Start a component (raising its ComponentError, which names it and its log), stop it
    at the end whatever happened."""
    try:
        component.start()
        yield component
    finally:
        component.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats"), free_port(), free_port())
    with running(server):
        yield server.url


@dataclass(frozen=True)
class VaultServer:
    addr: str
    token: str


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    server = OpenBaoDev(tmp_path_factory.mktemp("openbao"), free_port_pair(), "test-root")
    with running(server):
        yield VaultServer(server.addr, server.root_token)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Registry(tmp_path_factory.mktemp("registry"), free_port())
    with running(server):
        yield server.address


@pytest.fixture(scope="session")
def container_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerStorage]:
    # A short name: podman's runroot (base/run) must stay within 50 characters.
    storage = ContainerStorage(tmp_path_factory.mktemp("cs")).prepare()
    yield storage
    remove_containers(storage)


def remove_containers(storage: ContainerStorage) -> None:
    """Remove every container (podman's and buildah's working ones) of a storage root.

    Containers left behind would keep overlay mounts under the temp directory, and
    localnomad deliberately leaves app containers running when it stops (it re-adopts them).
    """
    if not storage.conf_file.exists():
        return
    subprocess.run(
        storage.podman("rm", "--all", "--force", "--time", "0"), env=storage.env(),
        capture_output=True, check=False, timeout=120,
    )
    subprocess.run(
        storage.buildah("rm", "--all"), env=storage.env(),
        capture_output=True, check=False, timeout=120,
    )


def _localnomad(
    tmp_path_factory: pytest.TempPathFactory,
    runtime: str,
    storage: ContainerStorage,
    vault: VaultServer,
    registry: str | None = None,
) -> Iterator[str]:
    server = LocalNomad(
        tmp_path_factory.mktemp(f"localnomad-{runtime}"), free_port(), runtime=runtime,
        storage=storage, vault_addr=vault.addr, vault_token=vault.token, registry=registry,
    )
    with running(server):
        yield server.addr


@pytest.fixture(scope="session")
def localnomad_simulated(
    tmp_path_factory: pytest.TempPathFactory,
    container_storage: ContainerStorage,
    openbao: VaultServer,
) -> Iterator[str]:
    yield from _localnomad(tmp_path_factory, "simulated", container_storage, openbao)


@pytest.fixture(scope="session")
def localnomad_podman(
    tmp_path_factory: pytest.TempPathFactory,
    container_storage: ContainerStorage,
    openbao: VaultServer,
    registry: str,
) -> Iterator[str]:
    """Real containers, pulling from the session's `registry` (seed it before pulling)."""
    yield from _localnomad(tmp_path_factory, "podman", container_storage, openbao, registry)


# -- the whole stack ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShamanStack:
    api_url: str
    admin_token: str
    nats_url: str
    nomad_addr: str
    vault_addr: str
    vault_token: str
    registry: str
    config: StackConfig

    @property
    def storage(self) -> ContainerStorage:
        return self.config.storage


@pytest.fixture(scope="session")
def shaman_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShamanStack]:
    """Every component and the four services, podman runtime, seeded registry."""
    config = StackConfig.for_tests(
        tmp_path_factory.mktemp("shaman-home"), components=ALL_COMPONENTS,
        runtime="podman", openbao_mode="dev", seed_images=True,
    )
    stack = Stack(config)
    try:
        stack.up_or_raise()
        yield ShamanStack(
            api_url=config.api_url, admin_token=config.admin_token(), nats_url=config.nats_url,
            nomad_addr=config.nomad_addr, vault_addr=config.vault_addr,
            vault_token=config.vault_token(), registry=config.registry, config=config,
        )
    finally:
        stack.down()
        remove_containers(config.storage)


# -- asyncio hygiene -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """For async tests only: fail the test when it leaves asyncio tasks behind."""
    test = getattr(request.node, "obj", None)
    if test is not None and inspect.iscoroutinefunction(test):
        request.getfixturevalue("_asyncio_task_leak_check")


@pytest.fixture
async def _asyncio_task_leak_check() -> AsyncIterator[None]:
    # Set up before the test's own fixtures and torn down after them, so a fixture that
    # cleans up properly (a NATS client it drains, a server it stops) is not reported.
    yield
    me = asyncio.current_task()
    leftover = {task for task in asyncio.all_tasks() if task is not me and not task.done()}
    if not leftover:
        return
    # Tasks that are just finishing (cancelled a moment ago) get a short grace period.
    _, still_pending = await asyncio.wait(leftover, timeout=1.0)
    if not still_pending:
        return
    names = sorted(f"{task.get_name()} ({task.get_coro()!r})" for task in still_pending)
    for task in still_pending:
        task.cancel()
    await asyncio.gather(*still_pending, return_exceptions=True)
    pytest.fail(
        f"the test left {len(names)} asyncio task(s) running: " + "; ".join(names),
        pytrace=False,
    )
