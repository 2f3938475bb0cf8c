"""The real `shaman` console script against the whole running stack, real containers.

Each test runs `.venv/bin/shaman` as a subprocess (as a user or a CI job would) against the
`shaman_stack` fixture, and checks what a person or a script relies on: the exit code, the
words on stdout/stderr, the `--json` documents. Images are built with buildah FROM the
stack's seeded busybox and pushed to the stack's registry: `hello` (examples/hello, healthy)
and `crash` (its process exits 1 at once).

Rollouts use tiny timings (min healthy time 0.2 s, health checks every 1 s, Nomad's
minimum) so a deploy takes seconds; the CLI's own `--timeout` bounds every wait.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.images import build, push
from devstack.ports import free_port
from tests.conftest import ShamanStack

pytestmark = [pytest.mark.e2e, pytest.mark.podman]

REPO = Path(__file__).resolve().parents[2]
SHAMAN = Path(sys.executable).parent / "shaman"
HELLO_DIR = REPO / "examples" / "hello"
DEPLOY_TIMEOUT_S = 240
CRASH_CONTAINERFILE = """\
ARG REGISTRY
FROM ${REGISTRY}/library/busybox:stable
CMD ["/bin/sh", "-c", "echo 'cli-e2e: refusing to start: MISSING_SETTING is not set' >&2; exit 1"]
"""
FAST_ROLLOUT = [
    "--port", "8080", "--health-path", "/health",
    "--min-healthy-time", "0.2", "--healthy-deadline", "20", "--progress-deadline", "30",
    "--set", "health.interval_s=1", "--set", "health.timeout_s=1",
]


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:  # what a failed assert shows
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]
    stack: ShamanStack

    def __call__(
        self, *args: str, stdin: str | None = None, cwd: Path | None = None,
        env: dict[str, str] | None = None, timeout_s: float = DEPLOY_TIMEOUT_S + 60,
    ) -> Run:
        done = subprocess.run(
            [str(SHAMAN), *args], input=stdin, capture_output=True, text=True,
            cwd=cwd, env={**self.env, **(env or {})}, timeout=timeout_s, check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Images:
    repository: str  # <registry>/cli-hello, the apps' image repository
    hello: str
    crash: str


@pytest.fixture(scope="module")
def cli(shaman_stack: ShamanStack, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHAMAN_")}
    env |= {
        "SHAMAN_API_URL": shaman_stack.api_url,
        "SHAMAN_TOKEN": shaman_stack.admin_token,
        "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg")),
        "COLUMNS": "200",  # rich wraps tables at the terminal width; keep lines whole
    }
    return Cli(env=env, stack=shaman_stack)


@pytest.fixture(scope="module")
def images(shaman_stack: ShamanStack, tmp_path_factory: pytest.TempPathFactory) -> Images:
    registry = shaman_stack.registry
    log = tmp_path_factory.mktemp("image-logs") / "build.log"
    repository = f"{registry}/cli-hello"
    hello = f"{repository}:e2e-hello"
    crash = f"{repository}:e2e-crash"
    build(shaman_stack.storage, HELLO_DIR, hello, log, build_args={"REGISTRY": registry})
    push(shaman_stack.storage, hello, log)
    crash_dir = tmp_path_factory.mktemp("crash-image")
    (crash_dir / "Containerfile").write_text(CRASH_CONTAINERFILE)
    build(shaman_stack.storage, crash_dir, crash, log, build_args={"REGISTRY": registry})
    push(shaman_stack.storage, crash, log)
    return Images(repository=repository, hello=hello, crash=crash)


def new_app_name() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def app_name(cli: Cli) -> Iterator[str]:
    name = new_app_name()
    yield name
    cli("apps", "destroy", name, "--confirm", name, timeout_s=60)


def create_app(cli: Cli, name: str, images: Images, *extra: str) -> None:
    created = cli("apps", "create", name, "--image", images.repository, *FAST_ROLLOUT, *extra)
    assert created.code == 0, created


# -- login ------------------------------------------------------------------------------------


def test_login_verifies_and_stores_the_token_privately(cli: Cli, tmp_path: Path) -> None:
    xdg = tmp_path / "config"
    env = {"SHAMAN_API_URL": "", "SHAMAN_TOKEN": "", "XDG_CONFIG_HOME": str(xdg)}
    bad = cli("login", "--api-url", cli.stack.api_url, stdin="shm_not-a-token\n", env=env)
    assert bad.code == 1, bad
    assert "401" in bad.stderr
    assert not (xdg / "shaman" / "config.json").exists()

    good = cli("login", "--api-url", cli.stack.api_url, stdin=cli.stack.admin_token + "\n",
               env=env)
    assert good.code == 0, good
    config_file = xdg / "shaman" / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert json.loads(config_file.read_text())["api_url"] == cli.stack.api_url
    assert cli.stack.admin_token not in good.stdout + good.stderr

    # Now the environment holds nothing and the file is enough.
    listed = cli("apps", "list", "--json", env={**env, "SHAMAN_API_URL": "", "SHAMAN_TOKEN": ""})
    assert listed.code == 0, listed
    assert isinstance(listed.json()["apps"], list)


def test_unreachable_api_says_so_with_exit_4(cli: Cli) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli("apps", "list", env={"SHAMAN_API_URL": dead})
    assert result.code == 4, result
    assert f"cannot reach the Shaman API at {dead}: is the stack running? (make run)" in (
        result.stderr
    )


# -- apps ---------------------------------------------------------------------------------------


def test_apps_create_list_info_and_field_errors(cli: Cli, images: Images, app_name: str) -> None:
    created = cli("apps", "create", app_name, "--image", images.repository, *FAST_ROLLOUT,
                  "--instances", "2", "--json")
    assert created.code == 0, created
    assert created.json()["name"] == app_name
    assert created.json()["instances"] == 2

    listed = cli("apps", "list", "--json")
    assert listed.code == 0, listed
    assert app_name in {app["name"] for app in listed.json()["apps"]}
    table = cli("apps", "list")
    assert app_name in table.stdout

    info = cli("apps", "info", app_name, "--json")
    assert info.code == 0, info
    assert info.json()["app"]["health"]["path"] == "/health"
    assert info.json()["latest_deploy"] is None

    again = cli("apps", "create", app_name, "--image", images.repository)
    assert again.code == 1
    assert "409" in again.stderr

    bad = cli("apps", "create", new_app_name(), "--health-path", "no-slash", "--json")
    assert bad.code == 1
    error = bad.json()["error"]
    assert error["status"] == 422
    assert "health.path" in {item["loc"] for item in error["details"]}
    assert "health.path" in cli("apps", "create", new_app_name(), "--health-path", "x").stderr

    missing = cli("apps", "info", new_app_name())
    assert missing.code == 1 and "404" in missing.stderr


# -- deploys and exit codes --------------------------------------------------------------------


def test_deploy_image_healthy_exits_0_with_live_view(
    cli: Cli, images: Images, app_name: str
) -> None:
    create_app(cli, app_name, images)
    result = cli("deploy", "-a", app_name, "--image", images.hello,
                 "--timeout", str(DEPLOY_TIMEOUT_S))
    assert result.code == 0, result
    assert "rollout" in result.stdout  # progress lines (plain, not a terminal)
    assert "Deployed v1: healthy" in result.stdout

    releases = cli("releases", "-a", app_name, "--json")
    assert releases.code == 0, releases
    assert [r["version"] for r in releases.json()["releases"]] == [1]

    # --json: one document with stable keys, the outcome and the exit code.
    again = cli("deploy", "-a", app_name, "--image", images.hello, "--json",
                "--timeout", str(DEPLOY_TIMEOUT_S))
    assert again.code == 0, again
    document = again.json()
    assert set(document) == {"deploy", "outcome", "exit_code", "reason", "failure",
                             "rollback_failure", "gave_up"}
    assert document["outcome"] == "healthy"
    assert document["exit_code"] == 0
    assert document["deploy"]["status"] == "healthy"


def test_deploy_directory_upload_builds_and_ends_healthy(
    cli: Cli, images: Images, app_name: str, tmp_path: Path
) -> None:
    create_app(cli, app_name, images)
    source = tmp_path / "hello"
    shutil.copytree(HELLO_DIR, source)
    (source / ".gitignore").write_text("*.tmp\n")
    (source / "junk.tmp").write_text("x" * 1024)
    (source / ".shaman.json").write_text(json.dumps({"app": app_name}))
    result = cli("deploy", "--timeout", str(DEPLOY_TIMEOUT_S), cwd=source)
    assert result.code == 0, result
    assert "Uploading" in result.stderr
    assert "build succeeded" in result.stdout
    assert "Deployed v1: healthy" in result.stdout


def test_failed_deploy_without_auto_rollback_exits_1_with_the_reason(
    cli: Cli, images: Images, app_name: str
) -> None:
    create_app(cli, app_name, images, "--no-auto-rollback")
    result = cli("deploy", "-a", app_name, "--image", images.crash,
                 "--timeout", str(DEPLOY_TIMEOUT_S))
    assert result.code == 1, result
    assert "failed" in result.stderr
    # The explanation from rollout.failed: the exit code and the app's last words.
    assert "exit" in result.stdout
    assert "refusing to start" in result.stdout + result.stderr


def test_bad_release_is_rolled_back_exits_2(cli: Cli, images: Images, app_name: str) -> None:
    create_app(cli, app_name, images)
    first = cli("deploy", "-a", app_name, "--image", images.hello,
                "--timeout", str(DEPLOY_TIMEOUT_S))
    assert first.code == 0, first

    bad = cli("deploy", "-a", app_name, "--image", images.crash, "--json",
              "--timeout", str(DEPLOY_TIMEOUT_S))
    assert bad.code == 2, bad
    document = bad.json()
    assert document["outcome"] == "rolled_back"
    assert document["exit_code"] == 2
    assert document["reason"]
    assert document["failure"]["type"] == "rollout.failed"

    # The rollback is a new release, v3, with v1's content; it is what runs, healthy.
    info = cli("apps", "info", app_name, "--json").json()["app"]
    assert info["current_release"] == 3
    assert info["last_healthy_release"] == 3
    releases = cli("releases", "-a", app_name, "--json").json()["releases"]
    assert [(r["version"], r["rollback_of"]) for r in releases] == [(3, 1), (2, None), (1, None)]


# -- releases, config, secrets, rollback, scale, events -----------------------------------------


def test_config_secrets_rollback_scale_and_events(
    cli: Cli, images: Images, app_name: str
) -> None:
    create_app(cli, app_name, images)
    assert cli("deploy", "-a", app_name, "--image", images.hello,
               "--timeout", str(DEPLOY_TIMEOUT_S)).code == 0

    changed = cli("config:set", "-a", app_name, "GREETING=Hi from the CLI", "LOG_LEVEL=debug",
                  "--wait", "--timeout", str(DEPLOY_TIMEOUT_S))
    assert changed.code == 0, changed
    config = cli("config", "-a", app_name, "--json")
    assert config.json()["config"] == {"GREETING": "Hi from the CLI", "LOG_LEVEL": "debug"}
    unset = cli("config:unset", "-a", app_name, "LOG_LEVEL", "--wait",
                "--timeout", str(DEPLOY_TIMEOUT_S))
    assert unset.code == 0, unset
    assert cli("config", "-a", app_name, "--json").json()["config"] == {
        "GREETING": "Hi from the CLI"}

    marker = f"s3cr3t-{uuid.uuid4().hex}"
    secret = cli("secrets:set", "-a", app_name, "API_KEY", "--wait",
                 "--timeout", str(DEPLOY_TIMEOUT_S), stdin=f"API_KEY={marker}\n")
    assert secret.code == 0, secret
    assert marker not in secret.stdout + secret.stderr
    listed = cli("secrets:list", "-a", app_name, "--json")
    assert listed.code == 0, listed
    assert listed.json()["keys"] == ["API_KEY"]
    assert marker not in listed.stdout

    releases = cli("releases", "-a", app_name, "--json").json()["releases"]
    assert [r["version"] for r in releases] == [4, 3, 2, 1]
    assert marker not in json.dumps(releases)

    rolled = cli("rollback", "v1", "-a", app_name, "--json", "--timeout", str(DEPLOY_TIMEOUT_S))
    assert rolled.code == 0, rolled
    assert rolled.json()["outcome"] == "healthy"
    assert cli("config", "-a", app_name, "--json").json()["config"] == {}  # v1 had none

    scaled = cli("scale", "2", "-a", app_name, "--json")
    assert scaled.code == 0, scaled
    assert scaled.json()["instances"] == 2

    history = cli("events", "-a", app_name, "--json")
    assert history.code == 0, history
    types = [json.loads(line)["event"]["type"] for line in history.stdout.splitlines()]
    assert "release.created" in types and "deploy.finished" in types
    human = cli("events", "-a", app_name, "--type", "deploy.finished")
    assert human.code == 0, human
    assert "finished healthy" in human.stdout
    assert marker not in history.stdout + human.stdout


def test_logs_show_the_apps_output(cli: Cli, images: Images, app_name: str) -> None:
    create_app(cli, app_name, images, "--no-auto-rollback")
    cli("deploy", "-a", app_name, "--image", images.crash, "--timeout", str(DEPLOY_TIMEOUT_S))
    result = cli("logs", "-a", app_name, timeout_s=60)
    if result.code == 1 and "logs_unsupported" in result.stderr:
        pytest.skip("the API has no GET /v1/apps/{app}/logs yet")
    assert result.code == 0, result
    assert "refusing to start" in result.stdout
    as_json = cli("logs", "-a", app_name, "--json", timeout_s=60)
    assert as_json.code == 0, as_json
    lines = [json.loads(line)["line"] for line in as_json.stdout.splitlines()]
    assert any("refusing to start" in line for line in lines)
