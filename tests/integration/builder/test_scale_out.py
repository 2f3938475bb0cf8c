"""Many builder copies on one durable consumer: each build once, and none lost to a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.ports import free_port
from shared.events import BuildStarted, BuildSucceeded
from shared.settings import BuilderSettings
from tests.integration.builder.conftest import remove_working_containers
from tests.integration.builder.helpers import (
    SLOW_CONTAINERFILE,
    Platform,
    Timeline,
    git_source,
    make_git_repo,
    unique,
    wait_for,
)
from tests.integration.builder.test_stopping import processes_with

pytestmark = pytest.mark.podman


async def test_two_builders_build_two_apps_at_once_each_once(
    builder, platform: Platform, tmp_path: Path
) -> None:
    apps = [unique("par"), unique("par")]
    urls = []
    for app in apps:
        url, _ = make_git_repo(tmp_path / app, {
            "Containerfile": SLOW_CONTAINERFILE.format(seconds="2"), "marker": app,
        })
        urls.append(url)
        await platform.create_app(app)
    storages = [tmp_path / "storage-1", tmp_path / "storage-2"]
    try:
        async with (
            Timeline(platform.bus, apps[0]) as first, Timeline(platform.bus, apps[1]) as second,
            builder(instance_id="copy-1", builder_storage=str(storages[0])),
            builder(instance_id="copy-2", builder_storage=str(storages[1])),
        ):
            deploys = [await platform.deploy(app, git_source(url, "main"))
                       for app, url in zip(apps, urls, strict=True)]
            for deploy_id in deploys:
                await platform.wait_image(deploy_id)
    finally:
        for storage in storages:
            remove_working_containers(storage)
    started = first.of(BuildStarted) + second.of(BuildStarted)
    succeeded = first.of(BuildSucceeded) + second.of(BuildSucceeded)
    assert sorted(e.deploy_id for e in started) == sorted(deploys)  # each build ran once
    assert {e.builder for e in started} == {"copy-1", "copy-2"}
    # At the same time: both had started before the first one finished.
    assert max(e.time for e in started) < min(e.time for e in succeeded)
    for app, deploy_id in zip(apps, deploys, strict=True):
        assert [r.deploy_id for r in await platform.release_commands(app)] == [deploy_id]


def builder_process(settings: BuilderSettings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHAMAN_", "VAULT_"))}
    env.update({
        "NATS_URL": settings.nats_url,
        "SHAMAN_REGISTRY": settings.registry,
        "SHAMAN_BUILDER_STORAGE": settings.builder_storage,
        "SHAMAN_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "SHAMAN_INSTANCE_ID": settings.instance_id,
        "SHAMAN_ACK_WAIT_S": str(settings.ack_wait_s),
        "SHAMAN_RETENTION_INTERVAL_S": "0",
    })
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "services.builder"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


async def test_sigkill_mid_build_is_finished_once_by_another_copy(
    builder, builder_settings, platform: Platform, tmp_path: Path
) -> None:
    app = unique("kill")
    seconds = "4.531"
    url, _ = make_git_repo(tmp_path / "repo", {
        "Containerfile": SLOW_CONTAINERFILE.format(seconds=seconds), "marker": app,
    })
    await platform.create_app(app)
    victim_storage = tmp_path / "victim-storage"
    victim = builder_process(
        builder_settings(instance_id="victim", builder_storage=str(victim_storage)),
        tmp_path / "victim.log",
    )
    try:
        async with Timeline(platform.bus, app) as timeline:
            deploy_id = await platform.deploy(app, git_source(url, "main"))
            await wait_for(lambda: processes_with(f"sleep {seconds}"), 60, what="slow step")
            async with builder(instance_id="survivor"):
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                # The parent-death signal takes buildah down with the builder: nothing of
                # the victim's build can push later.
                await wait_for(lambda: not any("victim-storage" in " ".join(
                    Path(f"/proc/{pid}/cmdline").read_text().split("\0"))
                    for pid in _buildah_pids()), 10, what="victim's buildah gone")
                record = await platform.wait_image(deploy_id, timeout=90)
                await wait_for(lambda: timeline.of(BuildSucceeded), 10, what="build.succeeded")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        remove_working_containers(victim_storage)
    started = timeline.of(BuildStarted)
    assert [(e.builder, e.attempt) for e in started] == [("victim", 1), ("survivor", 2)]
    assert len(timeline.of(BuildSucceeded)) == 1
    releases = await platform.release_commands(app)
    assert [(r.deploy_id, r.digest) for r in releases] == [(deploy_id, record.digest)]
    assert record.image is not None and record.image.endswith(f"@{record.digest}")


def _buildah_pids() -> list[int]:
    return [pid for pid in processes_with("buildah")]
