"""Where the CLI finds the API, the token and the app: the environment, a config file, cwd.

Precedence, most specific first:

- API URL and token: `SHAMAN_API_URL` / `SHAMAN_TOKEN`, else the config file written by
  `shaman login`: `$XDG_CONFIG_HOME/shaman/config.json` (default `~/.config/shaman/`),
  created with mode 0600 in a 0700 directory, because it holds a bearer token.
- App: `-a/--app`, else `SHAMAN_APP`, else `{"app": "NAME"}` in `.shaman.json` in the
  current directory (a project's checkout names its app once, like Heroku's git remote).

This is the one module of the CLI that reads the environment. It does no HTTP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cli.errors import SettingsError

CONFIG_DIR_NAME = "shaman"
CONFIG_FILE_NAME = "config.json"
PROJECT_FILE_NAME = ".shaman.json"


@dataclass(frozen=True)
class Credentials:
    api_url: str
    token: str


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or ""
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / CONFIG_DIR_NAME / CONFIG_FILE_NAME


def read_config_file(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise SettingsError(f"cannot read {path}: {error}; run `shaman login` again") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{path} is not a JSON object; run `shaman login` again")
    return {key: value for key, value in raw.items() if isinstance(value, str)}


def write_config_file(path: Path, api_url: str, token: str) -> None:
    """Write the credentials so that no other user can read them, at any moment.

    The file is created 0600 before the token is written (never chmod-ed afterwards) and
    replaced atomically, so a crash leaves the old file or the new one, never half of one.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask; be exact
        with os.fdopen(fd, "w") as handle:
            json.dump({"api_url": api_url, "token": token}, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def normalise_api_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url:
        raise SettingsError("the API URL is empty")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"the API URL must start with http:// or https://, not {url!r}")
    return url


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """The API URL and token to use, or SettingsError saying how to provide them."""
    environ = os.environ if environ is None else environ
    from_file: dict[str, str] = {}
    if not (environ.get("SHAMAN_API_URL") and environ.get("SHAMAN_TOKEN")):
        from_file = read_config_file(config_path(environ))
    api_url = environ.get("SHAMAN_API_URL") or from_file.get("api_url", "")
    token = environ.get("SHAMAN_TOKEN") or from_file.get("token", "")
    if not api_url or not token:
        missing = " and ".join(
            name for name, value in (("API URL", api_url), ("token", token)) if not value
        )
        raise SettingsError(
            f"no {missing} configured: run `shaman login`, or set SHAMAN_API_URL and "
            "SHAMAN_TOKEN (with the dev stack: eval \"$(shaman dev env)\")"
        )
    return Credentials(api_url=normalise_api_url(api_url), token=token)


def resolve_app(
    option: str | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """The app a command is about: -a/--app, SHAMAN_APP, or .shaman.json in the cwd."""
    if option:
        return option
    environ = os.environ if environ is None else environ
    if environ.get("SHAMAN_APP"):
        return environ["SHAMAN_APP"]
    project_file = (cwd or Path.cwd()) / PROJECT_FILE_NAME
    if project_file.exists():
        try:
            raw = json.loads(project_file.read_text())
        except (OSError, ValueError) as error:
            raise SettingsError(f"cannot read {project_file}: {error}") from None
        if isinstance(raw, dict) and isinstance(raw.get("app"), str) and raw["app"]:
            return str(raw["app"])
        raise SettingsError(f'{project_file} has no "app" name (expected {{"app": "NAME"}})')
    raise SettingsError(
        "no app given: pass -a/--app NAME, set SHAMAN_APP, or put "
        f'{{"app": "NAME"}} in {PROJECT_FILE_NAME} in this directory'
    )
