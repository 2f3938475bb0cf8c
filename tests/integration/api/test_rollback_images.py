"""A rollback to a release whose image is gone from its registry is refused before any write."""

from __future__ import annotations

import asyncio

from bench.tiny_image import push_tiny_image
from devstack.ports import free_port
from shared.records import AppRecord, ReleaseRecord, release_key
from shared.subjects import STREAM_RELEASE_WORK, release_work_subject
from tests.integration.api.conftest import Api
from tests.integration.api.helpers import stream_messages, uniq

GONE = "sha256:" + "e" * 64  # never pushed


async def _release(api: Api, app: str, version: int, image: str) -> None:
    digest = image.rsplit("@", 1)[1]
    await api.service.ctx.releases.create(release_key(app, version), ReleaseRecord(
        app=app, version=version, kind="deploy", description=f"Deploy v{version}",
        created_by="t", deploy_id=f"d-{version}", image=image, digest=digest))

    def point(record: AppRecord) -> AppRecord:
        record.current_release = record.last_healthy_release = version
        record.next_release = version + 1
        return record

    await api.service.ctx.apps.mutate(app, point)


async def test_rollback_checks_the_target_image_in_its_registry(api: Api, registry: str) -> None:
    app = uniq()
    await api.create_app(app)
    repo = f"rb-{app}"
    digest = await asyncio.to_thread(push_tiny_image, registry, repo, "v1")
    await _release(api, app, 1, f"{registry}/{repo}@{digest}")
    await _release(api, app, 2, f"{registry}/{repo}@{GONE}")
    # A registry that cannot be reached cannot say the image is gone: the scheduler decides.
    await _release(api, app, 3, f"127.0.0.1:{free_port()}/{repo}@{digest}")
    await _release(api, app, 4, f"{registry}/{repo}@{digest}")
    before = await api.service.ctx.apps.get(app)

    async with api.http.post(f"/v1/apps/{app}/rollback", json={"version": 2},
                             headers={"Idempotency-Key": "rb-gone"}) as resp:
        assert resp.status == 422, await resp.text()
        error = (await resp.json())["error"]
    assert error["details"][0]["loc"] == "version"
    assert "no longer in its registry" in error["details"][0]["msg"]
    async with api.http.post(f"/v1/apps/{app}/rollback", json={"version": 9}) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"]["details"][0]["loc"] == "version"
    # Nothing written, nothing queued.
    after = await api.service.ctx.apps.get(app)
    assert before is not None and after is not None and after.revision == before.revision
    work = api.nc.jetstream()
    assert await stream_messages(work, STREAM_RELEASE_WORK, release_work_subject(app)) == []

    for version in (1, 3):
        async with api.http.post(f"/v1/apps/{app}/rollback", json={"version": version}) as resp:
            assert resp.status == 202, await resp.text()
    assert len(await stream_messages(work, STREAM_RELEASE_WORK, release_work_subject(app))) == 2
    # The same key, now for a rollback the registry allows: it was never taken.
    async with api.http.post(f"/v1/apps/{app}/rollback", json={"version": 1},
                             headers={"Idempotency-Key": "rb-gone"}) as resp:
        assert resp.status == 202, await resp.text()
