"""`shaman deploy` and `shaman rollback`: request a deploy, watch it live, exit honestly.

`deploy` takes one source: `--image REF`, `--git URL [--ref REF]`, or a directory (default
`.`) uploaded as a gzip tarball (cli/tarball.py). Every request carries a fresh
`Idempotency-Key`, so a retry after a dropped connection cannot start a second deploy.
Unless `--no-wait`, the command follows the deploy to its end (cli/deploy_watch.py) and
exits with the outcome's code (cli/outcome.py: 0 healthy, 1 failed, 2 rolled back,
3 superseded/cancelled, 4 gave up).

The commands that start a deploy as a side effect (config and secret changes) reuse
`follow_deploy` when asked to `--wait`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.client import UPLOAD_TIMEOUT_S, ShamanClient
from cli.common import AppOption, JsonOption, app_name, connect, run
from cli.deploy_view import HumanView, QuietView
from cli.deploy_watch import DeployWatcher, WatchResult
from cli.errors import UsageProblem
from cli.outcome import EXIT_GAVE_UP, headline
from cli.output import Output
from cli.tarball import build_archive

DEFAULT_TIMEOUT_S = 900.0
BUILD_FILES = ("Containerfile", "Dockerfile")

TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the outcome (then exit 4).")
]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Follow the deploy until it ends.")
]


def deploy(
    path: Annotated[
        Path | None,
        typer.Argument(help="Directory to upload and build (default: .).", show_default=False),
    ] = None,
    app: AppOption = None,
    image: Annotated[str | None, typer.Option(help="Deploy this image reference.")] = None,
    git: Annotated[str | None, typer.Option(help="Build this git URL.")] = None,
    ref: Annotated[str | None, typer.Option(help="Git ref to build (with --git).")] = None,
    description: Annotated[
        str | None, typer.Option("--description", "-m", help="Why (shown in releases).")
    ] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
) -> None:
    """Deploy an image, a git ref, or a directory, and watch it roll out."""
    directory = (path if path is not None else Path(".")).resolve()

    async def body(out: Output) -> int:
        sources = [s for s in (image, git, path) if s is not None]
        if len(sources) > 1:
            raise UsageProblem("give one source: --image REF, --git URL, or a directory")
        if ref is not None and git is None:
            raise UsageProblem("--ref needs --git URL")
        name = app_name(app)
        key = str(uuid.uuid4())
        async with connect() as client:
            if image is not None or git is not None:
                payload: dict[str, Any] = (
                    {"image": image} if image is not None
                    else {"git": {"url": git, **({"ref": ref} if ref else {})}}
                )
                if description:
                    payload["description"] = description
                what = f"image {image}" if image is not None else f"{git}@{ref or 'main'}"

                async def start() -> Any:
                    return await client.request(
                        "POST", f"/v1/apps/{name}/deploys", json_body=payload,
                        headers={"Idempotency-Key": key},
                    )
            else:
                data, what = await _prepare_upload(client, out, name, directory)

                async def start() -> Any:
                    return await client.request(
                        "POST", f"/v1/apps/{name}/deploys", data=data,
                        headers={"Content-Type": "application/gzip", "Idempotency-Key": key},
                        timeout_s=UPLOAD_TIMEOUT_S,
                    )

            return await follow_deploy(
                client, out, name, start, wait=wait, timeout_s=timeout,
                intro=f"Deploying {what} to {name}",
            )

    run(json_output, body)


async def _prepare_upload(
    client: ShamanClient, out: Output, name: str, directory: Path
) -> tuple[bytes, str]:
    """The tarball of `directory` (resolved), checked for something to build from."""
    # Ask for the app first: a typo in its name should not cost a tarball.
    app = await client.request("GET", f"/v1/apps/{name}")
    try:
        archive = await asyncio.to_thread(build_archive, directory)
    except NotADirectoryError:
        raise UsageProblem(f"{directory} is not a directory") from None
    wanted = str(app.get("dockerfile") or "Containerfile") if isinstance(app, dict) else ""
    candidates = {wanted, *BUILD_FILES} if wanted else set(BUILD_FILES)
    if not candidates & set(archive.files):
        raise UsageProblem(
            f"{directory} has no {wanted or 'Containerfile'} (nor a Dockerfile) "
            "to build from, or it is ignored"
        )
    out.note(
        f"Uploading {directory}: {len(archive.files)} files, "
        f"{archive.size / 1024:.1f} KiB compressed"
    )
    return archive.data, f"{directory.name}/ (upload)"


def rollback(
    version: Annotated[
        str | None,
        typer.Argument(metavar="[vN]", help="Release to restore (default: the last healthy).",
                       show_default=False),
    ] = None,
    app: AppOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    json_output: JsonOption = False,
) -> None:
    """Roll back to a release (its image, config and secrets), and watch it roll out."""

    async def body(out: Output) -> int:
        payload: dict[str, Any] = {}
        if version is not None:
            payload["version"] = parse_version(version)
        name = app_name(app)
        key = str(uuid.uuid4())
        async with connect() as client:

            async def start() -> Any:
                return await client.request(
                    "POST", f"/v1/apps/{name}/rollback", json_body=payload,
                    headers={"Idempotency-Key": key},
                )

            target = f"v{payload['version']}" if payload else "the last healthy release"
            return await follow_deploy(
                client, out, name, start, wait=wait, timeout_s=timeout,
                intro=f"Rolling {name} back to {target}",
            )

    run(json_output, body)


def parse_version(text: str) -> int:
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise UsageProblem(f"{text!r} is not a release: expected vN or N, e.g. v7")
    return int(digits)


async def follow_deploy(
    client: ShamanClient,
    out: Output,
    name: str,
    start: Callable[[], Awaitable[Any]],
    *,
    wait: bool,
    timeout_s: float,
    intro: str,
) -> int:
    """Start a deploy with `start()` and, if `wait`, watch it and report; the exit code."""
    if not wait:
        answer = await start()
        if out.json_mode:
            out.document({"deploy": answer, "outcome": None, "exit_code": 0, "reason": None,
                          "failure": None, "rollback_failure": None, "gave_up": None})
        else:
            deploy_id = answer.get("id") if isinstance(answer, dict) else None
            out.text(f"{intro}: deploy {deploy_id} accepted ({_status(answer)}).")
            out.text(f"Follow it: shaman events -a {name} -f")
        return 0
    view = QuietView(out) if out.json_mode else HumanView(out)
    watcher = DeployWatcher(client, name, view, timeout_s=timeout_s)
    try:
        async with watcher.following():
            answer = await start()
            if not isinstance(answer, dict) or not answer.get("id"):
                raise UsageProblem(f"the API accepted the request but sent no deploy: {answer}")
            out.text(f"{intro}: deploy {answer['id']}")
            result = await watcher.watch(str(answer["id"]), answer)
    finally:
        view.close()
    return report(out, name, result)


def report(out: Output, name: str, result: WatchResult) -> int:
    if out.json_mode:
        out.document(result.to_json())
        return result.exit_code
    if result.gave_up is not None:
        out.err.print(f"{result.gave_up}", style="yellow", markup=False)
        out.err.print(f"The deploy goes on; follow it: shaman events -a {name} -f",
                      markup=False)
        return EXIT_GAVE_UP
    status = result.status
    line = headline(status, result.deploy.get("release"))
    if status == "healthy":
        out.text(line, style="bold green")
        return result.exit_code
    reason = result.reason()
    out.err.print(line + (f": {reason}" if reason else ""), style="bold red", markup=False)
    if result.rollback_failure is not None and result.rollback_failure.get("reason"):
        out.err.print(f"rollback failed too: {result.rollback_failure['reason']}",
                      style="red", markup=False)
    superseded_by = result.deploy.get("superseded_by")
    if status == "superseded" and superseded_by:
        out.err.print(f"superseded by deploy {superseded_by}", markup=False)
    return result.exit_code


def _status(answer: Any) -> str:
    return str(answer.get("status", "?")) if isinstance(answer, dict) else "?"
