"""`shaman releases` and `shaman scale`: the release history and the instance count."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import AppOption, JsonOption, app_name, connect, run
from cli.errors import UsageProblem
from cli.output import Output


def releases(app: AppOption = None, json_output: JsonOption = False) -> None:
    """List an app's releases, newest first."""

    async def body(out: Output) -> None:
        name = app_name(app)
        async with connect() as client:
            answer = await client.request("GET", f"/v1/apps/{name}/releases")
            current = await client.request("GET", f"/v1/apps/{name}")
        items = answer.get("releases", []) if isinstance(answer, dict) else answer or []
        items = sorted((r for r in items if isinstance(r, dict)),
                       key=lambda r: int(r.get("version") or 0), reverse=True)
        if out.json_mode:
            out.document({"app": name, "releases": items})
            return
        if not items:
            out.text(f"{name} has no releases yet. Deploy it: shaman deploy -a {name}")
            return
        running = current.get("current_release") if isinstance(current, dict) else None
        healthy = current.get("last_healthy_release") if isinstance(current, dict) else None
        table = Table("version", "description", "by", "created", "image")
        for release in items:
            version = release.get("version")
            marks = (" (current)" if version == running else "") + (
                " ✓" if version == healthy else "")
            table.add_row(
                f"v{version}{marks}", str(release.get("description", "")),
                str(release.get("created_by", "")), _short_time(release.get("created_at")),
                _short_image(release.get("image")),
            )
        out.console.print(table)

    run(json_output, body)


def scale(
    instances: Annotated[str, typer.Argument(metavar="N", help="Instances to run (or web=N).")],
    app: AppOption = None,
    json_output: JsonOption = False,
) -> None:
    """Change the number of instances (no new release)."""

    async def body(out: Output) -> None:
        count = parse_instances(instances)
        name = app_name(app)
        async with connect() as client:
            answer = await client.request(
                "POST", f"/v1/apps/{name}/scale", json_body={"instances": count}
            )
        if out.json_mode:
            out.document(answer)
            return
        previous = answer.get("previous") if isinstance(answer, dict) else None
        was = f" (was {previous})" if previous is not None else ""
        out.text(f"Scaling {name} to {count} instances{was}.")

    run(json_output, body)


def parse_instances(text: str) -> int:
    """`3` or Heroku's `web=3` (the one process group is `web`)."""
    group, equals, number = text.rpartition("=")
    if equals and group != "web":
        raise UsageProblem(f"{text!r}: the only process group is web (web=N)")
    if not number.isdigit():
        raise UsageProblem(f"{text!r} is not an instance count")
    return int(number)


def _short_time(value: Any) -> str:
    text = str(value or "")
    return text[:19].replace("T", " ") if text else "-"


def _short_image(value: Any) -> str:
    text = str(value or "")
    repository, at, digest = text.partition("@")
    if at and digest.startswith("sha256:"):
        return f"{repository}@{digest[:19]}"
    return text or "-"
