"""The `shaman` command line: the typer app that user commands hang off.

Heroku-shaped: `login`; `apps create|list|info|destroy`; `deploy`; `releases`;
`rollback`; `config`, `config:set`, `config:unset`; `secrets:set|list|unset`; `scale`;
`logs`; `events`. Every command takes `--json`; app-scoped ones take `-a/--app`
(default `$SHAMAN_APP`, else `.shaman.json`). docs/cli.md is the manual.

The CLI talks to Shaman over HTTP only; it never imports a service or the devstack (the
devstack's `shaman dev ...` group is added to this app from devstack/shaman_command.py).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import typer

from cli.commands import config_vars, deploy, events_logs, login, releases, secrets
from cli.commands.apps import apps_app

app = typer.Typer(
    help="Shaman: deploy apps to Nomad.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print Shaman's version."""
    try:
        typer.echo(package_version("shaman"))
    except PackageNotFoundError:
        typer.echo("unknown (not installed)")


app.command("login")(login.login)
app.add_typer(apps_app, name="apps")
app.command("deploy")(deploy.deploy)
app.command("rollback")(deploy.rollback)
app.command("releases")(releases.releases)
app.command("scale")(releases.scale)
app.command("config")(config_vars.show_config)
app.command("config:set")(config_vars.set_config)
app.command("config:unset")(config_vars.unset_config)
app.command("secrets:set")(secrets.set_secrets)
app.command("secrets:list")(secrets.list_secrets)
app.command("secrets", hidden=True)(secrets.list_secrets)
app.command("secrets:unset")(secrets.unset_secret)
app.command("events")(events_logs.events)
app.command("logs")(events_logs.logs)
