"""The release model on the whole stack with real containers (issues 4 and 5):

- a deploy from a local git repository (a file:// URL) is built by the builder and healthy;
- a config change makes release v(N+1) and the running container sees the new value;
- a secret set through the API is visible inside the running container, while its unique
  marker value is absent from the Nomad job (read through Nomad's API), from every message
  kept on `shaman.>`, from the API's responses and from every service's log;
- rolling back to v1 restores v1's image, config and secret version.

examples/hello renders `GREETING` from its environment into its page, which makes what the
container sees readable from outside.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import pytest

if TYPE_CHECKING:
    from tests.conftest import ShamanStack

pytestmark = [pytest.mark.e2e, pytest.mark.podman]

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
APP = "releases-e2e"
TERMINAL = ("healthy", "failed", "rolled_back", "superseded", "cancelled")


class Api:
    def __init__(self, stack: ShamanStack) -> None:
        self.stack = stack
        self.bodies: list[bytes] = []  # every response body, to grep for the marker

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.stack.api_url}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.stack.admin_token}",
                     "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        self.bodies.append(raw)
        return status, json.loads(raw or b"null")

    def finish(self, accepted: dict[str, Any], timeout_s: float = 180) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            _, record = self("GET", f"/v1/apps/{APP}/deploys/{accepted['id']}")
            return record if record["status"] in TERMINAL else None

        record = wait_for(f"deploy {accepted['id']}", done, timeout_s)
        assert record["status"] == "healthy", record
        return record


def wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def nomad(stack: ShamanStack, path: str) -> bytes:
    with urllib.request.urlopen(f"{stack.nomad_addr}{path}", timeout=10) as response:
        return bytes(response.read())


def page(stack: ShamanStack) -> str:
    services = json.loads(nomad(stack, f"/v1/service/{APP}"))
    if not services:
        return ""
    url = f"http://{services[0]['Address']}:{services[0]['Port']}/"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def page_shows(stack: ShamanStack, text: str, timeout_s: float = 90) -> None:
    wait_for(f"the app's page to show {text!r}", lambda: text in page(stack), timeout_s)


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """examples/hello as a local git repository with one commit on `main`."""
    repo = tmp_path_factory.mktemp("hello-git")
    shutil.copytree(HELLO, repo, dirs_exist_ok=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "hello"], check=True)
    return f"file://{repo}"


async def kept_messages(stack: ShamanStack) -> list[bytes]:
    """Every message kept in every Shaman stream (headers and payloads)."""
    nc = await nats.connect(stack.nats_url, user="admin",
                            password=stack.config.nats_password("admin"),
                            inbox_prefix=b"_INBOX_admin")
    try:
        js = nc.jetstream()
        out: list[bytes] = []
        for stream in await js.streams_info():
            name = stream.config.name
            if not name:
                continue
            first, last = max(stream.state.first_seq, 1), stream.state.last_seq
            for seq in range(first, last + 1):
                try:
                    msg = await js.get_msg(name, seq)
                except nats.js.errors.NotFoundError:
                    continue
                out.append((msg.data or b"") + json.dumps(msg.headers or {}).encode())
        return out
    finally:
        await nc.close()


def test_git_deploy_config_secret_and_a_complete_rollback(
    shaman_stack: ShamanStack, git_repo: str
) -> None:
    api = Api(shaman_stack)
    status, body = api("POST", "/v1/apps", {
        "name": APP, "port": 8080, "health": {"path": "/health"},
        "git": {"url": git_repo, "ref": "main"},
    })
    assert status == 201, body

    # v1: built from the git repository by the builder.
    status, accepted = api("POST", f"/v1/apps/{APP}/deploys",
                           {"git": {"url": git_repo, "ref": "main"}})
    assert status == 202, accepted
    v1 = api.finish(accepted)
    assert v1["release"] == 1
    page_shows(shaman_stack, "Hello from Shaman")

    # v2: a config change reaches the running container.
    status, accepted = api("PATCH", f"/v1/apps/{APP}/config", {"GREETING": "Config says hi"})
    assert status == 202, accepted
    assert api.finish(accepted)["release"] == 2
    page_shows(shaman_stack, "Config says hi")

    # v3: a secret overrides it inside the container; its value goes nowhere else.
    marker = f"MARKER-{secrets.token_hex(12)}"
    status, accepted = api("PUT", f"/v1/apps/{APP}/secrets", {"GREETING": marker})
    assert status == 202, accepted
    assert api.finish(accepted)["release"] == 3
    page_shows(shaman_stack, marker)

    status, listed = api("GET", f"/v1/apps/{APP}/secrets")
    assert status == 200 and listed["keys"] == ["GREETING"]
    job = nomad(shaman_stack, f"/v1/job/{APP}")
    versions = nomad(shaman_stack, f"/v1/job/{APP}/versions")
    allocs = nomad(shaman_stack, f"/v1/job/{APP}/allocations")
    for where, blob in (("job", job), ("job versions", versions), ("allocations", allocs)):
        assert marker.encode() not in blob, f"secret marker in Nomad's {where}"
    assert not [b for b in api.bodies if marker.encode() in b], "secret marker in a response"
    assert not [m for m in asyncio.run(kept_messages(shaman_stack)) if marker.encode() in m]
    logs = sorted((shaman_stack.config.home / "logs").glob("*.log"))
    assert logs
    for log in logs:
        if log.name.startswith("localnomad"):
            continue  # the Nomad stand-in plays the Nomad client, which renders the secret
        assert marker not in log.read_text(errors="replace"), f"secret marker in {log}"

    # v4: rolling back to v1 restores v1's image, config and (no) secret version.
    status, accepted = api("POST", f"/v1/apps/{APP}/rollback", {"version": 1})
    assert status == 202, accepted
    v4 = api.finish(accepted)
    assert v4["release"] == 4
    page_shows(shaman_stack, "Hello from Shaman")
    assert marker not in page(shaman_stack) and "Config says hi" not in page(shaman_stack)
    _, first = api("GET", f"/v1/apps/{APP}/releases/1")
    _, rolled = api("GET", f"/v1/apps/{APP}/releases/4")
    assert rolled["image"] == first["image"]
    assert rolled["config"] == first["config"]
    assert rolled.get("secrets") == first.get("secrets")
