"""Private git remotes with credentials from Vault (OpenBao dev), never from the request.

The credential reaches git through its environment and never appears in the timeline,
the stored log, the deploy record or the builder's own log output.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import hvac
import pytest

from services.builder.credentials import CredentialStore
from shared.events import encode_event
from tests.conftest import VaultServer
from tests.integration.builder.helpers import (
    Platform,
    Timeline,
    commit_files,
    git,
    git_source,
    unique,
)
from tests.integration.builder.private_git import PrivateGitServer

pytestmark = pytest.mark.podman

PASSWORD = "tok-" + "9f3b7c1e5d2a"


def bare_repo(root: Path, name: str, files: dict[str, str]) -> None:
    work = root / f"{name}-work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    commit_files(work, files)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / name)], check=True)


async def test_private_git_remote_with_vault_credentials(
    builder, platform: Platform, openbao: VaultServer, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    app = unique("priv")
    vault_path = f"shaman-test-{app}"
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    client.secrets.kv.v2.create_or_update_secret(
        path=f"{vault_path}/git/127.0.0.1", secret={"username": "ci", "password": PASSWORD},
        mount_point="secret",
    )
    bare_repo(tmp_path, "app.git", {
        # A build step that prints the credential: the scrubber must catch it.
        "Containerfile": ("ARG REGISTRY\nFROM ${REGISTRY}/library/busybox:stable\n"
                          f"RUN echo leaked {PASSWORD}\n"),
    })
    await platform.create_app(app)
    async with (
        PrivateGitServer(tmp_path, "ci", PASSWORD) as server,
        Timeline(platform.bus, app) as timeline,
    ):
        # Without Vault the remote refuses us: the deploy fails, with no password prompt.
        async with builder():
            refused = await platform.deploy(app, git_source(server.url("app.git"), "main"))
            record = await platform.wait_status(refused, "failed")
        assert server.refused > 0
        assert "could not read Username" in (record.reason or ""), record.reason

        async with builder(vault_addr=openbao.addr, vault_token=openbao.token,
                           builder_vault_path=vault_path):
            deploy_id = await platform.deploy(app, git_source(server.url("app.git"), "main"))
            record = await platform.wait_image(deploy_id)
    stored = await platform.build_log(app, deploy_id)
    assert "leaked [REDACTED]" in stored
    captured = capfd.readouterr()
    everything = [
        stored, str(record), *(encode_event(e).decode() for e in timeline.events),
        captured.out, captured.err,
    ]
    assert not any(PASSWORD in text for text in everything)


async def test_credential_store_reads_kv_v2_and_hides_values(
    builder_settings, openbao: VaultServer
) -> None:
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    path = f"shaman-test-{unique('cred')}"
    client.secrets.kv.v2.create_or_update_secret(
        path=f"{path}/registry/reg.example:5000",
        secret={"username": "bot", "password": "pw-value-1"}, mount_point="secret",
    )
    store = CredentialStore(builder_settings(vault_addr=openbao.addr, vault_token=openbao.token,
                                             builder_vault_path=path))
    credential = await store.registry("reg.example:5000")
    assert credential is not None and credential.password == "pw-value-1"
    assert "pw-value-1" not in repr(credential)
    assert await store.git("nowhere.example") is None
    assert await CredentialStore(builder_settings()).git("x") is None  # no Vault token
