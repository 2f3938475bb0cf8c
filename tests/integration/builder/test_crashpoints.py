"""kill -9 at the builder's crash points: a real process that exits 137, then the next copy.

A builder subprocess armed with SHAMAN_CRASHPOINT takes an image deploy and dies at the
point (services/builder/crashpoints.py); an in-process builder then gets the redelivery.
Checked: what the dead copy left (image recorded, the build log stored, DeployImage
queued or not), then one DeployImage, one build, the work message gone.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import subjects
from shared.bus import Bus
from shared.commands import ImageSource
from shared.events import BuildStarted, BuildSucceeded
from tests.integration.builder.helpers import Platform, Timeline, unique, wait_for

pytestmark = pytest.mark.podman

ROOT = Path(__file__).resolve().parents[3]


def start_crashing_builder(
    nats_url: str, registry: str, point: str, tmp: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "SHAMAN_REGISTRY": registry,
        "SHAMAN_BUILDER_STORAGE": str(tmp / "storage"),  # its own, as every copy's is
        "SHAMAN_HTTP_ADDR": "127.0.0.1:0",
        "SHAMAN_ACK_WAIT_S": "3",
        "SHAMAN_RETENTION_INTERVAL_S": "0",
        "SHAMAN_INSTANCE_ID": "builder-crashing",
        "SHAMAN_LOG_FORMAT": "console",
        "SHAMAN_CRASHPOINT": point,
    }
    env.pop("VAULT_TOKEN", None)
    log_path = tmp / f"builder-{point}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.builder"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    return proc, log_path


async def queued_builds(bus: Bus, app: str) -> int:
    subject = subjects.build_work_subject(app)
    info = await bus.js.stream_info(subjects.STREAM_BUILD_WORK, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


@pytest.mark.parametrize("point", ["after_build_recorded", "after_release_command"])
async def test_killed_at_a_crash_point_the_next_copy_releases_once_and_the_log_is_kept(
    builder, platform: Platform, nats_url: str, seeded_registry: str, point: str,
    tmp_path: Path,
) -> None:
    app = unique("kill")
    await platform.create_app(app)
    ref = f"{seeded_registry}/library/busybox:stable"
    async with Timeline(platform.bus, app) as timeline:
        proc, log_path = start_crashing_builder(nats_url, seeded_registry, point, tmp_path)
        try:
            deploy_id = await platform.deploy(app, ImageSource(image=ref))
            code = await asyncio.to_thread(proc.wait, 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = log_path.read_text()
        assert code == 137, output[-3000:]
        assert f"crashpoint {point} reached" in output

        # What the dead copy left.
        record = await platform.record(deploy_id)
        assert record.digest is not None and record.status == "building"
        # The log was stored before the image was recorded: the redelivery builds nothing
        # and would never write it.
        assert f"build {deploy_id} attempt 1" in await platform.build_log(app, deploy_id)
        released = await platform.release_commands(app)
        assert len(released) == (0 if point == "after_build_recorded" else 1)
        assert await queued_builds(platform.bus, app) == 1  # not acked
        workroot = tmp_path / "storage" / "work"
        assert [p.name for p in workroot.iterdir()] == [f"{deploy_id}-1"]  # left behind

        # The killed copy restarted (its own storage): it gets the redelivery after the
        # ack wait, and first clears what it left.
        async with builder(builder_storage=str(tmp_path / "storage")):
            await wait_for(lambda: platform.release_commands(app), 20, what="DeployImage")
            await wait_for(lambda: _none_left(platform.bus, app), 20, what="the ack")
        assert list(workroot.iterdir()) == []
        releases = await platform.release_commands(app)
        assert [(r.deploy_id, r.digest) for r in releases] == [(deploy_id, record.digest)]
        assert [e.attempt for e in timeline.of(BuildStarted)] == [1]  # not built again
        assert timeline.of(BuildSucceeded)


async def _none_left(bus: Bus, app: str) -> bool:
    return await queued_builds(bus, app) == 0
