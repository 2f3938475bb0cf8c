"""The `shaman` command line: the typer app that user commands hang off.

The CLI talks to Shaman over HTTP only; it never imports a service or the devstack (the
devstack's `shaman dev ...` group is added to this app from devstack/shaman_command.py).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import typer

app = typer.Typer(help="Shaman: deploy apps to Nomad.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print Shaman's version."""
    try:
        typer.echo(package_version("shaman"))
    except PackageNotFoundError:
        typer.echo("unknown (not installed)")
