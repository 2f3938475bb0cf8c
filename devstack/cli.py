"""`shaman dev up | down | status | env`: the dev stack from the command line.

A thin layer over devstack.stack: it parses options, prints progress and tables, and turns
failures into one clear line per component (what failed, where its log is) and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from devstack.stack import DEFAULT_PORTS, SERVICES, Stack, StackConfig, StepResult

dev_app = typer.Typer(
    help="Run the whole stack on this machine (state under $SHAMAN_HOME or .shaman/).",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)

STOP_HINT = "make stop  (or: .venv/bin/shaman dev down)"


class Runtime(StrEnum):
    podman = "podman"
    simulated = "simulated"


def _parse_ports(values: list[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in DEFAULT_PORTS or not number.isdigit():
            raise typer.BadParameter(
                f"{value!r}: expected NAME=PORT with NAME one of {', '.join(DEFAULT_PORTS)}",
                param_hint="--port",
            )
        ports[name] = int(number)
    return ports


def _print_step(step: StepResult) -> None:
    if step.ok:
        extra = f"  {step.error}" if step.outcome == "external" else ""
        console.print(
            f"  [green]✓[/green] {step.name:<11} {step.outcome:<16} {step.seconds:5.1f}s{extra}"
        )
        return
    console.print(f"  [red]✗[/red] {step.name:<11} {step.outcome}: {step.error}")
    if step.log_path is not None and step.outcome == "failed":
        console.print(f"    log: {step.log_path}")


@dev_app.command()
def up(
    runtime: Runtime = typer.Option(
        None, help="localnomad's runtime (default: what the last `up` used, else podman)."
    ),
    services: bool = typer.Option(
        None, help="Start the four Shaman services too (default: yes, or what `up` last used)."
    ),
    port: list[str] = typer.Option(
        [], "--port", help="Override a port, NAME=PORT (e.g. api=9080); remembered."
    ),
) -> None:
    """Start whatever is not running and wait until all of it is healthy."""
    config = StackConfig.load()
    changes: dict[str, object] = {}
    if runtime is not None:
        changes["runtime"] = runtime.value
    if port:
        changes["ports"] = {**config.ports, **_parse_ports(port)}
    if services is not None:
        infra = tuple(c for c in config.components if c not in SERVICES)
        changes["components"] = (*infra, *SERVICES) if services else infra
    config = replace(config, **changes)  # type: ignore[arg-type]

    console.print(f"Starting the Shaman dev stack in {config.home}")
    result = Stack(config).up(on_step=_print_step)
    if not result.ok:
        failed = [step.name for step in result.failed if step.outcome == "failed"]
        skipped = [step.name for step in result.failed if step.outcome == "skipped"]
        console.print(f"\n[red]Not healthy.[/red] Failed: {', '.join(failed) or 'none'}.")
        if skipped:
            console.print(f"Skipped because something they need failed: {', '.join(skipped)}.")
        console.print("See the logs above; `shaman dev status` shows what is running.")
        console.print(f"Stop everything: {STOP_HINT}")
        raise typer.Exit(1)
    console.print("\n[bold]The Shaman dev stack is up.[/bold]")
    if "api" in config.components:
        console.print(f"  API:       {config.api_url}")
    console.print(f"  Nomad:     {config.nomad_addr}")
    console.print(f"  Registry:  {config.registry}")
    console.print(f"  Logs:      {config.home / 'logs'}")
    console.print("  Shell env: eval \"$(.venv/bin/shaman dev env)\"  (API URL and admin token)")
    console.print(f"  Stop:      {STOP_HINT}")


@dev_app.command()
def down(
    keep_containers: bool = typer.Option(
        False, help="Leave the apps' containers running (a later `up` re-adopts them)."
    ),
) -> None:
    """Stop every component of the stack and the apps' containers (SIGTERM, then SIGKILL)."""
    config = StackConfig.load()
    try:
        stopped = Stack(config).down(keep_containers=keep_containers)
    except RuntimeError as error:
        console.print(f"[red]could not stop everything:[/red] {error}")
        raise typer.Exit(1) from None
    names = [name for name, was_running in stopped if was_running]
    if names:
        console.print("Stopped: " + ", ".join(names))
    else:
        console.print("Nothing was running.")
    console.print(f"State is kept in {config.home} (remove it to start from scratch).")


@dev_app.command()
def status() -> None:
    """Show each component: pid, port, health and log file; exit 1 if any is unhealthy."""
    config = StackConfig.load()
    rows = Stack(config).status()
    table = Table("component", "pid", "port", "healthy", "log")
    for row in rows:
        if row.state == "external":
            table.add_row(row.name, "-", row.detail, _yes_no(row.healthy), "(external Nomad)")
            continue
        table.add_row(
            row.name, str(row.pid) if row.pid else "-", str(row.port), _yes_no(row.healthy),
            str(row.log_path),
        )
    console.print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


def _yes_no(healthy: bool) -> str:
    return "[green]yes[/green]" if healthy else "[red]no[/red]"


@dev_app.command()
def env() -> None:
    """Print `export` lines for a shell: eval "$(shaman dev env)"."""
    config = StackConfig.load()
    values = {
        "SHAMAN_API_URL": config.api_url,
        "SHAMAN_TOKEN": config.admin_token(),
        "NATS_URL": config.nats_url,
        # The `nats` CLI reads these: the stack's NATS admin user (docs/nats-permissions.md).
        "NATS_USER": "admin",
        "NATS_PASSWORD": config.nats_password("admin"),
        "NOMAD_ADDR": config.nomad_addr,
        "VAULT_ADDR": config.vault_addr,
        "SHAMAN_REGISTRY": config.registry,
    }
    for name, value in values.items():
        typer.echo(f"export {name}={shlex.quote(value)}")
