"""`shaman secrets:set K [K...]`, `secrets:list`, `secrets:unset K`: write-only secrets.

A secret value never appears on the command line (it would sit in `ps` and shell history),
is never echoed and is never printed back: `secrets:set` reads values from a hidden prompt
on a terminal, or from stdin when piped, as `KEY=value` lines (the keys named on the
command line, or all the lines when none are named). With exactly one key named, a piped
stdin that does not start with `KEY=` is that key's whole value (a certificate, say), with
one trailing newline removed.
"""

from __future__ import annotations

import sys
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.commands.config_vars import ChangeWaitOption
from cli.commands.deploy import DEFAULT_TIMEOUT_S, TimeoutOption, follow_deploy
from cli.common import AppOption, JsonOption, app_name, connect, run
from cli.errors import UsageProblem
from cli.output import Output


def parse_secret_input(keys: list[str], text: str) -> dict[str, str]:
    """The values for `keys` from piped stdin (see the module docstring)."""
    if len(keys) == 1 and not text.startswith(f"{keys[0]}="):
        value = text[:-1] if text.endswith("\n") else text
        value = value[:-1] if value.endswith("\r") else value
        return {keys[0]: value}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not key:
            # Name the line, never show it: it may hold a value.
            raise UsageProblem(f"stdin line {number} is not KEY=value")
        values[key] = value
    if keys:
        missing = [key for key in keys if key not in values]
        extra = sorted(set(values) - set(keys))
        if missing:
            raise UsageProblem(f"stdin has no value for {', '.join(missing)}")
        if extra:
            raise UsageProblem(f"stdin sets {', '.join(extra)}, not named on the command line")
    if not values:
        raise UsageProblem("no KEY=value lines on stdin")
    return values


def _check_keys(keys: list[str]) -> None:
    for key in keys:
        if "=" in key:
            raise UsageProblem(
                "pass secret values on stdin or at the prompt, never on the command line "
                "(they would stay in `ps` and your shell history): "
                "echo 'KEY=value' | shaman secrets:set KEY"
            )


def set_secrets(
    keys: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY", help="Secret names; values come from stdin or a prompt."),
    ] = None,
    app: AppOption = None,
    wait: ChangeWaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
) -> None:
    """Set secrets (one new release); values are read hidden, never from argv."""
    names = list(keys or [])
    values: dict[str, str] | None = None
    interactive = sys.stdin.isatty()
    if interactive and names and not any("=" in key for key in names):
        values = {key: typer.prompt(key, hide_input=True) for key in names}

    async def body(out: Output) -> int:
        _check_keys(names)
        if interactive and not names:
            raise UsageProblem("name the secrets to set: shaman secrets:set KEY [KEY...]")
        secret_values = values if values is not None else parse_secret_input(
            names, sys.stdin.read()
        )
        empty = sorted(key for key, value in secret_values.items() if value == "")
        if empty:
            raise UsageProblem(f"empty value for {', '.join(empty)}; to remove a secret use "
                               "secrets:unset")
        name = app_name(app)
        key = str(uuid.uuid4())
        async with connect() as client:

            async def start() -> Any:
                return await client.request(
                    "PUT", f"/v1/apps/{name}/secrets", json_body=secret_values,
                    headers={"Idempotency-Key": key},
                )

            return await follow_deploy(
                client, out, name, start, wait=wait, timeout_s=timeout,
                intro=f"Setting secrets {', '.join(sorted(secret_values))} on {name}",
            )

    run(json_output, body)


def list_secrets(app: AppOption = None, json_output: JsonOption = False) -> None:
    """List secret names and the current version (values are never shown)."""

    async def body(out: Output) -> None:
        name = app_name(app)
        async with connect() as client:
            answer = await client.request("GET", f"/v1/apps/{name}/secrets")
        keys = answer.get("keys", []) if isinstance(answer, dict) else []
        version = answer.get("version") if isinstance(answer, dict) else None
        if out.json_mode:
            out.document({"app": name, "version": version, "keys": sorted(keys)})
            return
        if not keys:
            out.text(f"{name} has no secrets. Set one: echo 'KEY=value' | "
                     f"shaman secrets:set -a {name} KEY")
            return
        table = Table("name", title=f"{name} secrets (version {version})", title_justify="left")
        for key in sorted(keys):
            table.add_row(key)
        out.console.print(table)

    run(json_output, body)


def unset_secret(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The secret to remove.")],
    app: AppOption = None,
    wait: ChangeWaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
) -> None:
    """Remove a secret (one new release)."""

    async def body(out: Output) -> int:
        _check_keys([key])
        name = app_name(app)
        idempotency_key = str(uuid.uuid4())
        async with connect() as client:

            async def start() -> Any:
                return await client.request(
                    "DELETE", f"/v1/apps/{name}/secrets/{key}",
                    headers={"Idempotency-Key": idempotency_key},
                )

            return await follow_deploy(client, out, name, start, wait=wait, timeout_s=timeout,
                                       intro=f"Unsetting secret {key} on {name}")

    run(json_output, body)
