"""What every command shares: the `--json` and `-a/--app` options, and how a command runs.

A command body is an async function of an `Output`; `run()` gives it an event loop, turns a
`CliError` into its message (or JSON error document) and exit code, and Ctrl-C into exit
130 without a traceback. `connect()` opens the API client with the configured credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import typer

from cli.client import ShamanClient
from cli.errors import CliError
from cli.output import Output
from cli.settings import load_credentials, resolve_app

EXIT_INTERRUPTED = 130

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON (NDJSON for streams)."),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app", "-a", metavar="APP",
        help="The app (default: $SHAMAN_APP, else .shaman.json in this directory).",
        show_default=False,
    ),
]


def app_name(option: str | None) -> str:
    return resolve_app(option)


@contextlib.asynccontextmanager
async def connect() -> AsyncIterator[ShamanClient]:
    async with ShamanClient(load_credentials()) as client:
        yield client


def run(json_mode: bool, body: Callable[[Output], Awaitable[int | None]]) -> None:
    """Run a command body and exit with its code (0 when it returns None)."""
    out = Output(json_mode)
    try:
        code = asyncio.run(_call(body, out)) or 0
    except CliError as error:
        out.error(error)
        code = error.exit_code
    except KeyboardInterrupt:
        out.note("interrupted", style="yellow")
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)


async def _call(body: Callable[[Output], Awaitable[int | None]], out: Output) -> int | None:
    return await body(out)
