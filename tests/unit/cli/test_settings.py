"""Where the CLI finds its API, token and app, and how it stores the token."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cli.errors import SettingsError
from cli.settings import (
    config_path,
    load_credentials,
    normalise_api_url,
    read_config_file,
    resolve_app,
    write_config_file,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_path_follows_xdg(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "shaman" / "config.json"


def test_relative_xdg_is_ignored_as_the_spec_says() -> None:
    assert config_path({"XDG_CONFIG_HOME": "relative/dir"}) == (
        Path.home() / ".config" / "shaman" / "config.json"
    )
    assert config_path({}) == Path.home() / ".config" / "shaman" / "config.json"


def test_written_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "shaman" / "config.json"
    old = os.umask(0)
    try:
        write_config_file(path, "http://api:8080", "shm_secret")
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert json.loads(path.read_text()) == {"api_url": "http://api:8080", "token": "shm_secret"}
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_rewriting_replaces_and_tightens(tmp_path: Path) -> None:
    path = tmp_path / "shaman" / "config.json"
    path.parent.mkdir(mode=0o755)
    path.write_text("{}")
    path.chmod(0o644)
    write_config_file(path, "http://new", "t2")
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert read_config_file(path) == {"api_url": "http://new", "token": "t2"}


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    write_config_file(tmp_path / "shaman" / "config.json", "http://from-file", "file-token")
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert load_credentials(env).api_url == "http://from-file"
    assert load_credentials(env).token == "file-token"
    env |= {"SHAMAN_API_URL": "http://from-env/", "SHAMAN_TOKEN": "env-token"}
    creds = load_credentials(env)
    assert (creds.api_url, creds.token) == ("http://from-env", "env-token")
    # One from each place is fine too.
    creds = load_credentials({"XDG_CONFIG_HOME": str(tmp_path), "SHAMAN_TOKEN": "env-token"})
    assert (creds.api_url, creds.token) == ("http://from-file", "env-token")


def test_nothing_configured_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="shaman login"):
        load_credentials({"XDG_CONFIG_HOME": str(tmp_path)})


def test_a_broken_config_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "shaman" / "config.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(SettingsError, match="cannot read"):
        load_credentials({"XDG_CONFIG_HOME": str(tmp_path)})


def test_api_url_normalisation() -> None:
    assert normalise_api_url(" 127.0.0.1:8080/ ") == "http://127.0.0.1:8080"
    assert normalise_api_url("https://shaman.internal") == "https://shaman.internal"
    with pytest.raises(SettingsError):
        normalise_api_url("ftp://x")


def test_app_resolution_order(tmp_path: Path) -> None:
    (tmp_path / ".shaman.json").write_text('{"app": "from-file"}')
    assert resolve_app("from-option", {"SHAMAN_APP": "from-env"}, tmp_path) == "from-option"
    assert resolve_app(None, {"SHAMAN_APP": "from-env"}, tmp_path) == "from-env"
    assert resolve_app(None, {}, tmp_path) == "from-file"


def test_no_app_anywhere(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="-a/--app"):
        resolve_app(None, {}, tmp_path)


def test_project_file_without_an_app(tmp_path: Path) -> None:
    (tmp_path / ".shaman.json").write_text('{"name": "x"}')
    with pytest.raises(SettingsError, match='"app"'):
        resolve_app(None, {}, tmp_path)
