"""The api service against a real nats-server of its own and the shared OpenBao dev server.

The api tests get a private nats-server (the api's streams and work queues must not leak
messages into other services' tests sharing the session server). Each test starts its own
api on a free port with a fresh `create_app`, and talks to it over real HTTP. Apps get
unique names, so tests never see each other's records.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client

from devstack.components.nats import NatsServer
from devstack.ports import free_port
from services.api.app import ApiService, create_app
from shared.settings import ApiSettings
from tests.conftest import VaultServer, running

# Fixed, not random: pytest may import this module twice (as conftest and from tests).
ADMIN_TOKEN = "shm_test-admin-0123456789abcdef"


@pytest.fixture(scope="session")
def api_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("api-nats"), free_port(), free_port(),
                        name="api-nats")
    with running(server):
        yield server


def api_settings(nats_url: str, vault: VaultServer | None, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = dict(
        nats_url=nats_url, http_addr="127.0.0.1:0", admin_token=ADMIN_TOKEN,
        vault_addr=vault.addr if vault else "http://127.0.0.1:9",
        vault_token=vault.token if vault else None,
        sse_keepalive_s=0.5, sse_heartbeat_s=0.2, nats_reconnect_wait_s=0.05,
        instance_id=f"test-{secrets.token_hex(3)}", log_format="console",
        # Off unless a test wants it: tests plant pending deploys and count messages.
        redrive_interval_s=0,
    )
    values.update(overrides)
    return ApiSettings(**values)


@dataclass
class Api:
    service: ApiService
    http: aiohttp.ClientSession  # with the admin token
    nc: Client  # a separate NATS client for the tests' own reads

    @property
    def url(self) -> str:
        return self.service.url

    def client(self, token: str | None) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return aiohttp.ClientSession(base_url=self.url, headers=headers)

    async def token(self, role: str, teams: list[str], name: str | None = None) -> str:
        async with self.http.post("/v1/tokens", json={
            "name": name or f"{role}-{'-'.join(teams)}".replace("*", "all"),
            "role": role, "teams": teams,
        }) as resp:
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["token"])

    async def create_app(self, name: str, **fields: Any) -> dict[str, Any]:
        async with self.http.post("/v1/apps", json={"name": name, **fields}) as resp:
            assert resp.status == 201, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body


@pytest.fixture
async def api(api_nats: NatsServer, openbao: VaultServer) -> AsyncIterator[Api]:
    async with create_app(api_settings(api_nats.url, openbao)) as service:
        nc = await nats.connect(api_nats.url)
        try:
            async with aiohttp.ClientSession(
                base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as http:
                yield Api(service=service, http=http, nc=nc)
        finally:
            await nc.drain()
