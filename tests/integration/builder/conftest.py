"""Fixtures for the builder's integration tests: a private NATS, a seeded registry, builders.

NATS is per module (the streams and the `builders` durable have fixed names, so tests of
other packages must not share them); the registry is the session one from tests/conftest.py
with the offline busybox base image seeded once. Each builder gets its own buildah storage
(a builder copy in production has its own disk too).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from devstack.components.nats import NatsServer
from devstack.podman import ContainerStorage
from devstack.ports import free_port
from devstack.seed import ensure_busybox
from services.builder.app import BuilderApp, create_app
from shared import subjects
from shared.bus import Bus, connect_bus, provision
from shared.settings import BuilderSettings
from tests.conftest import running
from tests.integration.builder.helpers import Platform


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("builder-nats"), free_port(), free_port())
    with running(server):
        yield server.url


@pytest.fixture(scope="session")
def seeded_registry(
    registry: str, container_storage: ContainerStorage, tmp_path_factory: pytest.TempPathFactory
) -> str:
    ensure_busybox(registry, container_storage, tmp_path_factory.mktemp("seed") / "seed.log")
    return registry


def remove_working_containers(base: Path) -> None:
    """Unmount what killed builds left, so pytest can delete the temp directory."""
    storage = ContainerStorage(base)
    subprocess.run(storage.buildah("rm", "--all"), env=storage.env(), capture_output=True,
                   check=False, timeout=120)


@pytest.fixture(scope="session")
def shared_builder_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One storage reused across tests (keeps the layer cache warm, like a real builder)."""
    base = tmp_path_factory.mktemp("builder-storage")
    yield base
    remove_working_containers(base)


SettingsFactory = Callable[..., BuilderSettings]


@pytest.fixture
def builder_settings(
    nats_url: str, seeded_registry: str, shared_builder_storage: Path
) -> SettingsFactory:
    def make(**overrides: Any) -> BuilderSettings:
        values: dict[str, Any] = {
            "nats_url": nats_url,
            "registry": seeded_registry,
            "builder_storage": str(shared_builder_storage),
            "http_addr": "127.0.0.1:0",
            "instance_id": "builder-test",
            "ack_wait_s": 3.0,
            "max_deliver": 5,
            "retention_interval_s": 0,
            "vault_token": None,
            "log_format": "console",
        }
        values.update(overrides)
        return BuilderSettings(**values)

    return make


@pytest.fixture
async def bus(nats_url: str, builder_settings: SettingsFactory) -> AsyncIterator[Bus]:
    """A client connection; the work streams are emptied so no test sees another's work."""
    connection = await connect_bus(builder_settings(), "builder-tests")
    await provision(connection.js)
    for stream in (subjects.STREAM_BUILD_WORK, subjects.STREAM_RELEASE_WORK):
        await connection.js.purge_stream(stream)
    yield connection
    await connection.close()


@pytest.fixture
async def platform(bus: Bus) -> Platform:
    return await Platform(bus).open()


@pytest.fixture
def builder(
    builder_settings: SettingsFactory,
) -> Callable[..., AbstractAsyncContextManager[BuilderApp]]:
    """`async with builder(**setting_overrides) as app:` runs one builder copy in-process."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[BuilderApp]:
        return create_app(builder_settings(**overrides))

    return start
