"""shared.logging: JSON lines with the standard fields, stdlib routed through, secrets redacted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared.logging import REDACTED, configure_logging, get_logger, is_secret_key, redact_secrets


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging() changes process-wide state; put it back for the tests after us."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(**config)


def _redact(**fields: object) -> dict[str, object]:
    return dict(redact_secrets(None, "info", {"event": "e", **fields}))


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "password",
        "db_password",
        "secret",
        "Authorization",
        "authorization",
        "vault_token",
        "VAULT_TOKEN",
        "VaultToken",
        "X-Nomad-Token",
        "X-Vault-Token",
        "SecretID",
        "nomad_token",
        "api_key",
        "admin_token",
        "unseal_keys",
        "Cookie",
    ],
)
def test_secret_looking_keys_are_redacted(key: str) -> None:
    assert is_secret_key(key)
    assert _redact(**{key: "hunter2-value"})[key] == REDACTED


@pytest.mark.parametrize(
    "key",
    ["app", "deploy_id", "tokenizer", "secret_names", "secret_version", "secret_path", "version"],
)
def test_descriptive_keys_stay_readable(key: str) -> None:
    assert not is_secret_key(key)
    assert _redact(**{key: "visible"})[key] == "visible"


def test_secrets_mapping_keeps_names_and_hides_values() -> None:
    out = _redact(secrets={"DATABASE_URL": "postgres://u:pw@db/x", "API_KEY": "k-123"})
    assert out["secrets"] == {"DATABASE_URL": REDACTED, "API_KEY": REDACTED}


def test_nested_structures_are_scrubbed() -> None:
    out = _redact(
        request={"headers": {"Authorization": "Bearer abc.def", "Accept": "json"}},
        env=[{"name": "X", "token": "t0k"}],
        job={"Meta": {"release": "3"}, "VaultToken": "s.xyz"},
    )
    assert out["request"] == {"headers": {"Authorization": REDACTED, "Accept": "json"}}
    assert out["env"] == [{"name": "X", "token": REDACTED}]
    assert out["job"] == {"Meta": {"release": "3"}, "VaultToken": REDACTED}


def test_bearer_strings_under_innocent_keys_are_redacted() -> None:
    assert _redact(header="Bearer abc.def.ghi")["header"] == REDACTED
    assert _redact(note="a bearer of news")["note"] == "a bearer of news"


def test_event_message_and_reserved_fields_are_untouched() -> None:
    out = redact_secrets(None, "info", {"event": "token rotated", "level": "info"})
    assert out == {"event": "token rotated", "level": "info"}


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_have_standard_fields_and_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", "scheduler")
    log = get_logger("shaman.test")
    log.info("job registered", app="web", outcome="created", nomad_token="s3cr3t-tok")
    log.debug("not shown")
    lines = _json_lines(capsys.readouterr().err)
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "job registered"
    assert line["level"] == "info"
    assert line["service"] == "scheduler"
    assert line["logger"] == "shaman.test"
    assert line["app"] == "web"
    assert "timestamp" in line
    assert "s3cr3t-tok" not in json.dumps(line)


def test_stdlib_logging_goes_through_the_same_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", "json", "api")
    logging.getLogger("aiohttp.client").warning("connection lost to %s", "nats")
    logging.getLogger("aiohttp.client").info("below the level")
    lines = _json_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0]["event"] == "connection lost to nats"
    assert lines[0]["service"] == "api"
    assert lines[0]["level"] == "warning"


def test_exceptions_are_rendered_into_the_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", "watcher")
    log = get_logger("shaman.test")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler failed", app="web")
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in str(line["exception"])


def test_console_format_is_readable_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console", "builder")
    get_logger("t").info("build started", app="web", password="pw-value")
    err = capsys.readouterr().err
    assert "build started" in err
    assert "app=web" in err
    assert "pw-value" not in err


def test_reconfiguring_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", "one")
    configure_logging("info", "json", "two")
    get_logger("t").info("hello")
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["service"] == "two"


def test_bad_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "json", "x")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml", "x")
