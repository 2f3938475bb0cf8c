"""Image retention against the real registry: kept releases keep their images."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.builder.references import parse_image_ref
from shared import subjects
from shared.bus import TypedKV
from shared.records import AppRecord, ReleaseRecord
from tests.integration.builder.helpers import (
    HELLO_CONTAINERFILE,
    Platform,
    commit_files,
    git_source,
    make_git_repo,
    unique,
)

pytestmark = pytest.mark.podman


async def exists(app_under_test, image: str) -> bool:
    try:
        await app_under_test.retention.client.resolve(parse_image_ref(image))
    except Exception:
        return False
    return True


async def test_retention_deletes_only_images_no_kept_release_pins(
    builder, platform: Platform, tmp_path: Path
) -> None:
    app = unique("keep")
    repo = tmp_path / "repo"
    url, _ = make_git_repo(repo, {"Containerfile": HELLO_CONTAINERFILE, "index.html": "0\n"})
    await platform.create_app(app)
    async with builder(keep_releases=2) as running:
        records = []
        for n in range(5):
            if n:
                commit_files(repo, {"index.html": f"{n}\n"})
            deploy_id = await platform.deploy(app, git_source(url, "main"))
            records.append(await platform.wait_image(deploy_id))
        releases = TypedKV(await platform.bus.js.key_value(subjects.KV_RELEASES), ReleaseRecord)
        # Releases v1..v4 for the first four images; the fifth was superseded, never released.
        for version, record in enumerate(records[:4], start=1):
            assert record.image and record.digest
            await releases.create(f"{app}.{version}", ReleaseRecord(
                app=app, version=version, kind="deploy", description="d", created_by="t",
                deploy_id=record.id, image=record.image, digest=record.digest,
            ))
        for record in records[:4]:
            await platform.set_status(record.id, "deploying")
            await platform.set_status(record.id, "healthy")
        await platform.set_status(records[4].id, "superseded")
        assert platform.apps is not None

        def rolled_back_to_v1(app_record: AppRecord) -> AppRecord:
            app_record.current_release, app_record.last_healthy_release = 4, 1
            return app_record

        await platform.apps.mutate(app, rolled_back_to_v1)

        report = await running.retention.prune_app(app)

        kept = [await exists(running, r.image or "") for r in records]
    # v1 (last healthy), v3 and v4 (the last two) stay; v2 and the unreleased build go.
    assert kept == [True, False, True, True, False]
    assert sorted(report.deleted) == sorted([str(records[1].digest), str(records[4].digest)])


async def test_retention_skips_an_app_with_a_deploy_in_flight(
    builder, platform: Platform, tmp_path: Path
) -> None:
    app = unique("busy")
    url, _ = make_git_repo(tmp_path / "repo", {"Containerfile": HELLO_CONTAINERFILE,
                                               "index.html": "x\n"})
    await platform.create_app(app)
    async with builder(keep_releases=1) as running:
        deploy_id = await platform.deploy(app, git_source(url, "main"))
        record = await platform.wait_image(deploy_id)  # built; no release yet
        report = await running.retention.prune_app(app)
        assert report.skipped and report.deleted == []
        assert await exists(running, record.image or "")
