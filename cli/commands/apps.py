"""`shaman apps create | list | info | destroy`.

`apps create` sends only the fields given, so the API's defaults (docs: the app form) apply
to the rest; `--set PATH=VALUE` reaches any field the options do not cover
(`--set rollout.min_healthy_time_s=0.2`), the value read as JSON when it parses as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import JsonOption, connect, run
from cli.errors import UsageProblem
from cli.output import Output

apps_app = typer.Typer(help="Create, list, inspect and destroy apps.", no_args_is_help=False)


def set_path(body: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=VALUE` to a nested dict; VALUE is JSON when it parses, else a string."""
    path, equals, raw = assignment.partition("=")
    if not equals or not path or any(not part for part in path.split(".")):
        raise UsageProblem(f"--set {assignment!r}: expected FIELD=VALUE, e.g. rollout.canaries=1")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    target = body
    parts = path.split(".")
    for part in parts[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageProblem(f"--set {assignment!r}: {part} is not an object")
        target = child
    target[parts[-1]] = value


def app_body(
    name: str,
    *,
    image: str | None = None,
    git: str | None = None,
    ref: str | None = None,
    port: int | None = None,
    instances: int | None = None,
    health_path: str | None = None,
    team: str | None = None,
    cpu: int | None = None,
    memory: int | None = None,
    command: str | None = None,
    args: list[str] | None = None,
    domains: list[str] | None = None,
    auto_rollback: bool | None = None,
    dockerfile: str | None = None,
    canaries: int | None = None,
    min_healthy_time: float | None = None,
    healthy_deadline: float | None = None,
    progress_deadline: float | None = None,
    sets: list[str] | None = None,
) -> dict[str, Any]:
    """The POST /v1/apps body for the options given (and nothing else)."""
    if ref is not None and git is None:
        raise UsageProblem("--ref needs --git URL")
    body: dict[str, Any] = {"name": name}
    simple = {
        "image": image, "port": port, "instances": instances, "team": team, "cpu_mhz": cpu,
        "memory_mb": memory, "command": command, "auto_rollback": auto_rollback,
        "dockerfile": dockerfile,
    }
    body.update({key: value for key, value in simple.items() if value is not None})
    if git is not None:
        body["git"] = {"url": git, **({"ref": ref} if ref else {})}
    if args:
        body["args"] = list(args)
    if domains:
        body["domains"] = list(domains)
    if health_path is not None:
        body["health"] = {"path": health_path}
    rollout = {
        "canaries": canaries, "min_healthy_time_s": min_healthy_time,
        "healthy_deadline_s": healthy_deadline, "progress_deadline_s": progress_deadline,
    }
    if any(value is not None for value in rollout.values()):
        body["rollout"] = {key: value for key, value in rollout.items() if value is not None}
    for assignment in sets or []:
        set_path(body, assignment)
    return body


@apps_app.callback(invoke_without_command=True)
def _apps(ctx: typer.Context) -> None:
    """Without a subcommand: the same as `shaman apps list`."""
    if ctx.invoked_subcommand is None:
        run(False, _list)


@apps_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The app's name (a DNS label).")],
    image: Annotated[str | None, typer.Option(help="Image repository for image deploys.")] = None,
    git: Annotated[str | None, typer.Option(help="Git URL for source deploys.")] = None,
    ref: Annotated[str | None, typer.Option(help="Git ref (default: main).")] = None,
    port: Annotated[int | None, typer.Option(help="Port the app listens on.")] = None,
    instances: Annotated[int | None, typer.Option(help="Number of instances.")] = None,
    health_path: Annotated[str | None, typer.Option(help="HTTP health check path.")] = None,
    team: Annotated[str | None, typer.Option(help="Owning team.")] = None,
    cpu: Annotated[int | None, typer.Option(help="CPU in MHz.")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory in MiB.")] = None,
    command: Annotated[str | None, typer.Option(help="Command to run.")] = None,
    arg: Annotated[list[str] | None, typer.Option(help="Command argument (repeat).")] = None,
    domain: Annotated[list[str] | None, typer.Option(help="Domain to route (repeat).")] = None,
    auto_rollback: Annotated[
        bool | None,
        typer.Option("--auto-rollback/--no-auto-rollback",
                     help="Roll back automatically when a release fails (default: on).",
                     show_default=False),
    ] = None,
    dockerfile: Annotated[str | None, typer.Option(help="Containerfile path in the source.")]
    = None,
    canaries: Annotated[int | None, typer.Option(help="Canary instances per rollout.")] = None,
    min_healthy_time: Annotated[
        float | None, typer.Option(help="Seconds an instance must be healthy.")] = None,
    healthy_deadline: Annotated[
        float | None, typer.Option(help="Seconds an instance has to become healthy.")] = None,
    progress_deadline: Annotated[
        float | None, typer.Option(help="Seconds a rollout may go without progress.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="FIELD=VALUE",
                     help="Any other field, e.g. rollout.max_parallel=2 (repeat)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create an app."""

    async def body(out: Output) -> None:
        payload = app_body(
            name, image=image, git=git, ref=ref, port=port, instances=instances,
            health_path=health_path, team=team, cpu=cpu, memory=memory, command=command,
            args=arg, domains=domain, auto_rollback=auto_rollback, dockerfile=dockerfile,
            canaries=canaries, min_healthy_time=min_healthy_time,
            healthy_deadline=healthy_deadline, progress_deadline=progress_deadline,
            sets=set_,
        )
        async with connect() as client:
            created = await client.request("POST", "/v1/apps", json_body=payload)
        if out.json_mode:
            out.document(created)
            return
        team_name = created.get("team") if isinstance(created, dict) else None
        out.text(f"Created app {name}" + (f" (team {team_name})." if team_name else "."))
        out.text(f"Deploy it: shaman deploy -a {name} --image REF   or   "
                 f"shaman deploy -a {name} .")

    run(json_output, body)


@apps_app.command("list")
def list_apps(json_output: JsonOption = False) -> None:
    """List the apps your token can see."""
    run(json_output, _list)


async def _list(out: Output) -> None:
    async with connect() as client:
        answer = await client.request("GET", "/v1/apps")
    apps = _items(answer, "apps")
    if out.json_mode:
        out.document({"apps": apps})
        return
    if not apps:
        out.text("No apps yet. Create one: shaman apps create NAME --image REPO")
        return
    table = Table("name", "team", "state", "release", "instances", "source")
    for app in apps:
        table.add_row(
            str(app.get("name", "")), str(app.get("team", "")), str(app.get("state", "")),
            _version(app.get("current_release")), str(app.get("instances", "")),
            _source(app),
        )
    out.console.print(table)


@apps_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="The app.")],
    json_output: JsonOption = False,
) -> None:
    """Show an app's settings, state and latest deploy."""

    async def body(out: Output) -> None:
        async with connect() as client:
            app = await client.request("GET", f"/v1/apps/{name}")
            latest = None
            deploy_id = app.get("latest_deploy_id") or app.get("active_deploy_id")
            if deploy_id:
                latest = await client.request("GET", f"/v1/apps/{name}/deploys/{deploy_id}")
        if out.json_mode:
            out.document({"app": app, "latest_deploy": latest})
            return
        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for key in ("name", "team", "state"):
            table.add_row(key, str(app.get(key, "")))
        table.add_row("source", _source(app))
        table.add_row("current release", _version(app.get("current_release")))
        table.add_row("last healthy", _version(app.get("last_healthy_release")))
        for key in ("instances", "port", "cpu_mhz", "memory_mb", "command", "auto_rollback"):
            if key in app:
                table.add_row(key, _plain(app[key]))
        for key in ("health", "rollout"):
            if isinstance(app.get(key), dict):
                table.add_row(key, ", ".join(f"{k}={v}" for k, v in app[key].items()))
        if app.get("domains"):
            table.add_row("domains", ", ".join(app["domains"]))
        if isinstance(latest, dict):
            reason = f" ({latest['reason']})" if latest.get("reason") else ""
            table.add_row("latest deploy",
                          f"{latest.get('id')} {latest.get('status')}{reason}")
        out.console.print(table)

    run(json_output, body)


@apps_app.command("destroy")
def destroy(
    name: Annotated[str, typer.Argument(help="The app to destroy.")],
    confirm: Annotated[
        str | None,
        typer.Option(help="The app's name again, to confirm (asked for on a terminal)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Destroy an app: stop its job and remove it. Needs --confirm NAME."""
    if confirm is None and sys.stdin.isatty() and not json_output:
        confirm = typer.prompt(f"This stops and removes {name}. Type its name to confirm")

    async def body(out: Output) -> None:
        if confirm != name:
            raise UsageProblem(f"not destroying {name}: pass --confirm {name}")
        async with connect() as client:
            answer = await client.request("DELETE", f"/v1/apps/{name}")
        if out.json_mode:
            out.document(answer if answer is not None else {"app": name, "state": "destroyed"})
            return
        out.text(f"Destroyed {name}.")

    run(json_output, body)


def _items(answer: Any, key: str) -> list[dict[str, Any]]:
    if isinstance(answer, dict):
        answer = answer.get(key, [])
    return [item for item in answer or [] if isinstance(item, dict)]


def _version(value: Any) -> str:
    return f"v{value}" if isinstance(value, int) else "-"


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


def _source(app: dict[str, Any]) -> str:
    if app.get("image"):
        return str(app["image"])
    git = app.get("git")
    if isinstance(git, dict) and git.get("url"):
        return f"{git['url']}@{git.get('ref', 'main')}"
    return "-"
