"""`shaman login`: ask for the API URL and a token, check them, store them (0600)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from cli.client import ShamanClient
from cli.common import JsonOption, run
from cli.errors import SettingsError
from cli.output import Output
from cli.settings import (
    Credentials,
    config_path,
    normalise_api_url,
    read_config_file,
    write_config_file,
)

DEFAULT_API_URL = "http://127.0.0.1:8080"


def login(
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="The API URL (asked for when not given).",
                     show_default=False),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Store the API URL and a token in the config file, after checking them.

    The token is asked for without echo, or read from stdin when stdin is not a terminal
    (`shaman login --api-url URL < token-file`); it is never taken from the command line.
    """
    existing = _existing()
    if api_url is None:
        default = os.environ.get("SHAMAN_API_URL") or existing.get("api_url") or DEFAULT_API_URL
        api_url = default if not sys.stdin.isatty() else typer.prompt("API URL", default=default)
    if sys.stdin.isatty():
        token = typer.prompt("API token", hide_input=True).strip()
    else:
        token = sys.stdin.readline().strip()
    run(json_output, lambda out: _login(out, api_url or "", token))


def _existing() -> dict[str, str]:
    try:
        return read_config_file(config_path())
    except SettingsError:
        return {}


async def _login(out: Output, api_url: str, token: str) -> int:
    if not token:
        raise SettingsError("no token given (type it at the prompt, or pipe it on stdin)")
    credentials = Credentials(api_url=normalise_api_url(api_url), token=token)
    async with ShamanClient(credentials) as client:
        answer: Any = await client.request("GET", "/v1/apps")
    apps = answer.get("apps", []) if isinstance(answer, dict) else []
    path = config_path()
    write_config_file(path, credentials.api_url, credentials.token)
    if out.json_mode:
        out.document({"api_url": credentials.api_url, "config_file": str(path),
                      "apps_visible": len(apps)})
    else:
        out.text(f"Logged in to {credentials.api_url} ({len(apps)} apps visible).")
        out.text(f"Saved to {path} (readable by you only).")
    return 0
