"""Argument handling of the `shaman` commands, with no API anywhere (nothing is sent)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.commands.apps import app_body
from cli.commands.deploy import parse_version
from cli.commands.releases import parse_instances
from cli.commands.secrets import parse_secret_input
from cli.errors import UsageProblem
from cli.main import app
from devstack.ports import free_port

runner = CliRunner()


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_deploy_takes_one_source() -> None:
    code, _, err = invoke("deploy", "-a", "hello", "--image", "r/x:1", "--git", "https://g/x")
    assert code == 1
    assert "give one source" in err


def test_deploy_ref_needs_git() -> None:
    code, _, err = invoke("deploy", "-a", "hello", "--ref", "main")
    assert code == 1
    assert "--ref needs --git" in err


def test_secret_values_are_refused_on_the_command_line() -> None:
    code, out, err = invoke("secrets:set", "-a", "hello", "API_KEY=hunter2")
    assert code == 1
    assert "never on the command line" in err
    assert "hunter2" not in out + err


def test_config_set_needs_assignments() -> None:
    code, _, err = invoke("config:set", "-a", "hello", "JUSTANAME")
    assert code == 1
    assert "expected KEY=value" in err


def test_destroy_needs_the_name_confirmed() -> None:
    code, _, err = invoke("apps", "destroy", "hello", "--confirm", "hullo")
    assert code == 1
    assert "--confirm hello" in err


def test_not_configured_says_how() -> None:
    code, _, err = invoke("apps", "list")
    assert code == 1
    assert "shaman login" in err


def test_json_errors_are_one_document_on_stdout() -> None:
    code, out, _ = invoke("releases", "--json")
    assert code == 1
    document = json.loads(out)
    assert document["error"]["code"] == "not_configured"
    assert "-a/--app" in document["error"]["message"]


def test_unreachable_api_names_the_url_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("SHAMAN_API_URL", url)
    monkeypatch.setenv("SHAMAN_TOKEN", "shm_x")
    code, _, err = invoke("apps", "list")
    assert code == 4
    assert f"cannot reach the Shaman API at {url}: is the stack running? (make run)" in err
    code, out, _ = invoke("apps", "list", "--json")
    assert code == 4
    assert json.loads(out)["error"]["code"] == "unreachable"


def test_app_from_environment_and_project_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # With no credentials the command stops at "not configured", after resolving the app;
    # without an app it stops earlier and says so.
    code, _, err = invoke("config")
    assert "no app given" in err
    monkeypatch.setenv("SHAMAN_APP", "hello")
    code, _, err = invoke("config")
    assert code == 1 and "no app given" not in err and "shaman login" in err


def test_app_body_sends_only_what_was_given() -> None:
    assert app_body("hello") == {"name": "hello"}
    body = app_body(
        "hello", image="r/hello", port=8080, instances=2, health_path="/health", team="web",
        auto_rollback=False, min_healthy_time=0.2,
        sets=["rollout.max_parallel=2", "health.interval_s=0.5", "command=/bin/app"],
    )
    assert body == {
        "name": "hello", "image": "r/hello", "port": 8080, "instances": 2, "team": "web",
        "auto_rollback": False,
        "health": {"path": "/health", "interval_s": 0.5},
        "rollout": {"min_healthy_time_s": 0.2, "max_parallel": 2},
        "command": "/bin/app",
    }
    assert app_body("a", git="https://g/a.git", ref="v1")["git"] == {
        "url": "https://g/a.git", "ref": "v1"}


@pytest.mark.parametrize("bad", ["nofield", "=1", "a..b=1"])
def test_set_rejects_malformed_assignments(bad: str) -> None:
    with pytest.raises(UsageProblem):
        app_body("x", sets=[bad])


def test_versions_and_instances() -> None:
    assert parse_version("v7") == 7
    assert parse_version("12") == 12
    for bad in ("v0", "latest", "v-1", ""):
        with pytest.raises(UsageProblem):
            parse_version(bad)
    assert parse_instances("3") == 3
    assert parse_instances("web=0") == 0
    for bad in ("worker=2", "-1", "three"):
        with pytest.raises(UsageProblem):
            parse_instances(bad)


def test_rollback_version_is_checked_before_anything_is_sent() -> None:
    code, _, err = invoke("rollback", "latest", "-a", "hello")
    assert code == 1
    assert "expected vN" in err


def test_secret_input_as_lines() -> None:
    text = "# comment\nDB_URL=postgres://u:p@h/db?x=1\n\nAPI_KEY=abc=\n"
    assert parse_secret_input(["DB_URL", "API_KEY"], text) == {
        "DB_URL": "postgres://u:p@h/db?x=1", "API_KEY": "abc="}
    assert parse_secret_input([], text) == {"DB_URL": "postgres://u:p@h/db?x=1", "API_KEY": "abc="}


def test_secret_input_whole_value_for_one_key() -> None:
    pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n"
    assert parse_secret_input(["TLS_KEY"], pem) == {"TLS_KEY": pem[:-1]}
    assert parse_secret_input(["TOKEN"], "TOKEN=xyz\n") == {"TOKEN": "xyz"}


def test_secret_input_problems_never_echo_values() -> None:
    with pytest.raises(UsageProblem) as missing:
        parse_secret_input(["A", "B"], "A=secret-a\n")
    assert "B" in str(missing.value) and "secret-a" not in str(missing.value)
    with pytest.raises(UsageProblem) as extra:
        parse_secret_input(["A", "B"], "A=1\nB=2\nC=secret-c\n")
    assert "C" in str(extra.value) and "secret-c" not in str(extra.value)
    with pytest.raises(UsageProblem) as malformed:
        parse_secret_input(["A", "B"], "A=1\nsecret-without-key\n")
    assert "line 2" in str(malformed.value) and "secret-without" not in str(malformed.value)


def test_piped_secrets_reach_the_request_stage_without_echo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHAMAN_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SHAMAN_TOKEN", "shm_x")
    code, out, err = invoke("secrets:set", "-a", "hello", "API_KEY", stdin="API_KEY=hunter2\n")
    assert code == 4  # it got as far as calling the (absent) API
    assert "hunter2" not in out + err
