"""Builds that must stop: a superseded deploy, a build past its timeout.

"Really stopped" is checked on the machine: the build step's process (a `sleep` with a
unique argument) must be gone, not just the handler returned.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shared.events import BuildLog, DeployFinished
from tests.integration.builder.helpers import (
    SLOW_CONTAINERFILE,
    Platform,
    Timeline,
    git_source,
    make_git_repo,
    unique,
    wait_for,
)

pytestmark = pytest.mark.podman


def processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(proc.name))
    return found


def slow_repo(path: Path, seconds: str) -> str:
    url, _ = make_git_repo(path, {
        "Containerfile": SLOW_CONTAINERFILE.format(seconds=seconds),
        "marker": seconds,
    })
    return url


def log_has(timeline: Timeline, text: str) -> bool:
    return any(text in line for batch in timeline.of(BuildLog) for line in batch.lines)


async def test_superseded_build_is_killed_and_left_alone(
    builder, platform: Platform, tmp_path: Path
) -> None:
    app = unique("sup")
    seconds = f"{random.randint(40, 60)}.{random.randint(100, 999)}"
    url = slow_repo(tmp_path / "repo", seconds)
    await platform.create_app(app)
    async with Timeline(platform.bus, app) as timeline, builder() as running:
        deploy_id = await platform.deploy(app, git_source(url, "main"))
        await wait_for(lambda: processes_with(f"sleep {seconds}"), 60, what="slow step running")
        await platform.set_status(deploy_id, "superseded")
        await wait_for(lambda: running.consumer.handled >= 1, 10, what="handler returned")
        await wait_for(lambda: not processes_with(f"sleep {seconds}"), 5, what="build killed")
    record = await platform.record(deploy_id)
    assert record.status == "superseded" and record.digest is None and record.reason is None
    assert await platform.release_commands(app) == []
    assert not timeline.of(DeployFinished)
    assert "the deploy is superseded" in await platform.build_log(app, deploy_id)


async def test_build_timeout_stops_the_build_and_fails_the_deploy(
    builder, platform: Platform, tmp_path: Path
) -> None:
    app = unique("slow")
    seconds = f"{random.randint(40, 60)}.{random.randint(100, 999)}"
    url = slow_repo(tmp_path / "repo", seconds)
    await platform.create_app(app)
    async with Timeline(platform.bus, app) as timeline, builder(build_timeout_s=4):
        deploy_id = await platform.deploy(app, git_source(url, "main"))
        record = await platform.wait_status(deploy_id, "failed", timeout=30)
        await wait_for(lambda: not processes_with(f"sleep {seconds}"), 5, what="build killed")
        finished = await wait_for(lambda: timeline.of(DeployFinished), 5, what="finished")
    assert record.reason == "build timed out after 4s"
    assert finished[0].reason == "build timed out after 4s"
    assert await platform.release_commands(app) == []
