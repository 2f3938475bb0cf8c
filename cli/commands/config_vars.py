"""`shaman config`, `config:set K=V ...`, `config:unset K ...`: the app's config vars.

Each change is one new release, rolled out like a deploy; the command returns once the API
accepted it, or follows it to the end with `--wait` (same exit codes as `deploy`).
Config vars are not secret (they show in releases); secrets have their own commands.
"""

from __future__ import annotations

import shlex
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.client import ShamanClient
from cli.commands.deploy import DEFAULT_TIMEOUT_S, TimeoutOption, follow_deploy
from cli.common import AppOption, JsonOption, app_name, connect, run
from cli.errors import UsageProblem
from cli.output import Output

ChangeWaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Follow the new release's rollout to its end.")
]


def show_config(
    app: AppOption = None,
    shell: Annotated[bool, typer.Option("--shell", help="Print KEY=value lines.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Show the config vars of the current release."""

    async def body(out: Output) -> None:
        name = app_name(app)
        async with connect() as client:
            answer = await client.request("GET", f"/v1/apps/{name}/config")
        config = answer.get("config", {}) if isinstance(answer, dict) else {}
        if out.json_mode:
            out.document({"app": name, "release": answer.get("release"), "config": config})
            return
        if shell:
            for key in sorted(config):
                out.text(f"{key}={shlex.quote(str(config[key]))}")
            return
        if not config:
            out.text(f"{name} has no config vars. Set one: shaman config:set -a {name} KEY=value")
            return
        table = Table("name", "value", title=f"{name} config vars", title_justify="left")
        for key in sorted(config):
            table.add_row(key, str(config[key]))
        out.console.print(table)

    run(json_output, body)


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise UsageProblem(f"{pair!r}: expected KEY=value")
        values[key] = value
    return values


def set_config(
    pairs: Annotated[list[str], typer.Argument(metavar="KEY=VALUE", help="Vars to set.")],
    app: AppOption = None,
    wait: ChangeWaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
) -> None:
    """Set config vars (one new release)."""

    async def body(out: Output) -> int:
        changes: dict[str, Any] = dict(parse_assignments(pairs))
        name = app_name(app)
        async with connect() as client:
            return await _change(client, out, name, changes, wait, timeout,
                                 f"Setting {', '.join(sorted(changes))} on {name}")

    run(json_output, body)


def unset_config(
    keys: Annotated[list[str], typer.Argument(metavar="KEY", help="Vars to remove.")],
    app: AppOption = None,
    wait: ChangeWaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
) -> None:
    """Unset config vars (one new release)."""

    async def body(out: Output) -> int:
        for key in keys:
            if "=" in key:
                raise UsageProblem(f"{key!r}: config:unset takes names only")
        name = app_name(app)
        changes: dict[str, Any] = {key: None for key in keys}
        async with connect() as client:
            return await _change(client, out, name, changes, wait, timeout,
                                 f"Unsetting {', '.join(sorted(changes))} on {name}")

    run(json_output, body)


async def _change(
    client: ShamanClient, out: Output, name: str, changes: dict[str, Any], wait: bool,
    timeout_s: float, intro: str,
) -> int:
    key = str(uuid.uuid4())

    async def start() -> Any:
        return await client.request(
            "PATCH", f"/v1/apps/{name}/config", json_body=changes,
            headers={"Idempotency-Key": key},
        )

    return await follow_deploy(client, out, name, start, wait=wait, timeout_s=timeout_s,
                               intro=intro)
