"""The builder end to end on real servers: NATS, the registry and buildah.

Each test writes an app and a deploy the way the api does, runs a builder copy in-process
and checks the outcome where it is recorded: the deploy record, the timeline events, the
release command, the registry and the stored build log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.builder.references import parse_image_ref
from shared.commands import ImageSource
from shared.events import BuildFailed, BuildLog, BuildStarted, BuildSucceeded, DeployFinished
from tests.integration.builder.helpers import (
    HELLO_CONTAINERFILE,
    Platform,
    Timeline,
    git_source,
    make_git_repo,
    tarball,
    unique,
    wait_for,
)

pytestmark = pytest.mark.podman


async def registry_digest(registry: str, repository: str, tag: str) -> str | None:
    import aiohttp

    from services.builder.registry import RegistryClient

    async with aiohttp.ClientSession() as session:
        client = RegistryClient(session)
        try:
            return await client.resolve(parse_image_ref(f"{registry}/{repository}:{tag}"))
        except Exception:
            return None


async def test_image_source_resolves_to_a_digest_without_building(
    builder, platform: Platform, seeded_registry: str
) -> None:
    app = unique("img")
    await platform.create_app(app)
    ref = f"{seeded_registry}/library/busybox:stable"
    expected = await registry_digest(seeded_registry, "library/busybox", "stable")
    async with Timeline(platform.bus, app) as timeline, builder():
        deploy_id = await platform.deploy(app, ImageSource(image=ref))
        record = await platform.wait_image(deploy_id)
        await wait_for(lambda: timeline.of(BuildSucceeded), 10, what="build.succeeded")
    assert record.digest == expected
    assert record.image == f"{seeded_registry}/library/busybox@{expected}"
    assert record.status == "building"  # the scheduler moves it on
    releases = await wait_for(lambda: platform.release_commands(app), 10, what="DeployImage")
    assert [(r.deploy_id, r.image, r.digest) for r in releases] == [
        (deploy_id, record.image, expected)
    ]


async def test_unknown_image_fails_the_deploy(builder, platform: Platform, seeded_registry: str):
    app = unique("img")
    await platform.create_app(app)
    async with Timeline(platform.bus, app) as timeline, builder():
        deploy_id = await platform.deploy(
            app, ImageSource(image=f"{seeded_registry}/library/nothing:here")
        )
        record = await platform.wait_status(deploy_id, "failed")
        await wait_for(lambda: timeline.of(DeployFinished), 10, what="deploy.finished")
    assert "not found" in (record.reason or "")
    assert await platform.release_commands(app) == []


async def test_git_build_pushes_an_image_and_streams_its_log(
    builder, platform: Platform, seeded_registry: str, tmp_path: Path
) -> None:
    app = unique("git")
    url, sha = make_git_repo(tmp_path / "repo", {
        "Containerfile": HELLO_CONTAINERFILE, "index.html": f"hello {app}\n",
    })
    await platform.create_app(app)
    async with Timeline(platform.bus, app) as timeline, builder():
        deploy_id = await platform.deploy(app, git_source(url, "main"))
        record = await platform.wait_image(deploy_id)
        succeeded = await wait_for(lambda: timeline.of(BuildSucceeded), 10,
                                   what="build.succeeded")
    tag = sha[:12]
    pushed = await registry_digest(seeded_registry, app, tag)
    assert pushed is not None and record.digest == pushed
    assert record.image == f"{seeded_registry}/{app}@{pushed}"
    assert succeeded[0].digest == pushed and succeeded[0].image == f"{seeded_registry}/{app}:{tag}"
    assert [e.attempt for e in timeline.of(BuildStarted)] == [1]
    lines = [line for batch in timeline.of(BuildLog) for line in batch.lines]
    assert any("building hello" in line for line in lines)
    seqs = [batch.seq for batch in timeline.of(BuildLog)]
    assert seqs == sorted(seqs) and seqs[0] == 0
    releases = await platform.release_commands(app)
    assert len(releases) == 1 and releases[0].description == f"Deploy {sha[:7]}"
    stored = await platform.build_log(app, deploy_id)
    assert "building hello" in stored and f"pushed {seeded_registry}/{app}:{tag}" in stored


async def test_git_ref_may_be_a_tag_or_a_commit(
    builder, platform: Platform, tmp_path: Path
) -> None:
    from tests.integration.builder.helpers import commit_files, git

    app = unique("ref")
    repo = tmp_path / "repo"
    url, first = make_git_repo(repo, {"Containerfile": HELLO_CONTAINERFILE, "index.html": "1\n"})
    git(repo, "tag", "v1")
    second = commit_files(repo, {"index.html": "2\n"})
    await platform.create_app(app)
    async with builder():
        by_tag = await platform.deploy(app, git_source(url, "v1"))
        by_sha = await platform.deploy(app, git_source(url, second))
        tagged = await platform.wait_image(by_tag)
        pinned = await platform.wait_image(by_sha)
    assert tagged.digest != pinned.digest
    descriptions = {r.deploy_id: r.description for r in await platform.release_commands(app)}
    assert descriptions == {by_tag: f"Deploy {first[:7]}", by_sha: f"Deploy {second[:7]}"}


async def test_upload_build(builder, platform: Platform, seeded_registry: str) -> None:
    app = unique("up")
    await platform.create_app(app, dockerfile="Dockerfile")
    data = tarball({"Dockerfile": HELLO_CONTAINERFILE, "index.html": "uploaded\n"})
    source = await platform.upload(app, data)
    async with builder():
        deploy_id = await platform.deploy(app, source)
        record = await platform.wait_image(deploy_id)
    tag = source.digest.removeprefix("sha256:")[:12]
    assert record.digest == await registry_digest(seeded_registry, app, tag)


async def test_unsafe_upload_fails(builder, platform: Platform) -> None:
    app = unique("up")
    await platform.create_app(app)
    data = tarball({"Containerfile": HELLO_CONTAINERFILE, "../escape": "x"})
    async with builder():
        deploy_id = await platform.deploy(app, await platform.upload(app, data))
        record = await platform.wait_status(deploy_id, "failed")
    assert "unsafe entry" in (record.reason or "")


async def test_broken_containerfile_fails_with_the_step_and_log_tail(
    builder, platform: Platform, tmp_path: Path
) -> None:
    app = unique("bad")
    url, _ = make_git_repo(tmp_path / "repo", {"Containerfile": (
        "ARG REGISTRY\nFROM ${REGISTRY}/library/busybox:stable\nRUN echo fine\n"
        "RUN echo about to break && exit 3\nRUN echo never\n"
    )})
    await platform.create_app(app)
    async with Timeline(platform.bus, app) as timeline, builder():
        deploy_id = await platform.deploy(app, git_source(url, "main"))
        record = await platform.wait_status(deploy_id, "failed")
        failed = await wait_for(lambda: timeline.of(BuildFailed), 10, what="build.failed")
        finished = await wait_for(lambda: timeline.of(DeployFinished), 10,
                                  what="deploy.finished")
    reason = record.reason or ""
    assert "STEP 3/4: RUN echo about to break && exit 3" in reason
    assert "about to break" in reason.split("--- log tail ---")[1]
    assert failed[0].step == "RUN echo about to break && exit 3"
    assert any("about to break" in line for line in failed[0].log_tail)
    assert finished[0].status == "failed"
    assert await platform.release_commands(app) == []
    assert "about to break" in await platform.build_log(app, deploy_id)


async def test_unknown_git_ref_and_url_fail(builder, platform: Platform, tmp_path: Path) -> None:
    app = unique("ref")
    url, _ = make_git_repo(tmp_path / "repo", {"Containerfile": HELLO_CONTAINERFILE})
    await platform.create_app(app)
    async with builder():
        bad_ref = await platform.deploy(app, git_source(url, "no-such-branch"))
        bad_url = await platform.deploy(app, git_source(f"file://{tmp_path}/nothing", "main"))
        ref_record = await platform.wait_status(bad_ref, "failed")
        url_record = await platform.wait_status(bad_url, "failed")
    assert "couldn't find remote ref no-such-branch" in (ref_record.reason or "")
    assert "does not appear to be a git repository" in (url_record.reason or "")


async def test_terminal_deploys_are_skipped(builder, platform: Platform, tmp_path: Path) -> None:
    app = unique("skip")
    url, _ = make_git_repo(tmp_path / "repo", {"Containerfile": HELLO_CONTAINERFILE,
                                               "index.html": "x\n"})
    await platform.create_app(app)
    async with builder() as running_app:
        deploy_id = await platform.deploy(app, git_source(url, "main"))
        await platform.set_status(deploy_id, "superseded")
        await wait_for(lambda: running_app.consumer.handled >= 1, 20, what="message handled")
    record = await platform.record(deploy_id)
    assert record.status == "superseded" and record.digest is None
    assert await platform.release_commands(app) == []


async def test_cached_rebuild_reuses_layers(
    builder, platform: Platform, tmp_path: Path
) -> None:
    app = unique("cache")
    url, _ = make_git_repo(tmp_path / "repo", {"Containerfile": HELLO_CONTAINERFILE,
                                               "index.html": "same\n"})
    await platform.create_app(app)
    async with Timeline(platform.bus, app) as timeline, builder():
        first = await platform.deploy(app, git_source(url, "main"))
        first_record = await platform.wait_image(first)
        second = await platform.deploy(app, git_source(url, "main"))
        second_record = await platform.wait_image(second)
        done = await wait_for(lambda: len(timeline.of(BuildSucceeded)) == 2 and
                              timeline.of(BuildSucceeded), 10, what="two builds")
    assert second_record.digest == first_record.digest  # same source, same image
    by_deploy = {e.deploy_id: e for e in done}
    assert by_deploy[second].cached is True


async def test_missing_containerfile_fails(builder, platform: Platform, tmp_path: Path) -> None:
    app = unique("nocf")
    url, _ = make_git_repo(tmp_path / "repo", {"README": "no build file here\n"})
    await platform.create_app(app, dockerfile="deploy/Containerfile")
    async with builder():
        deploy_id = await platform.deploy(app, git_source(url, "main"))
        record = await platform.wait_status(deploy_id, "failed")
    assert record.reason == (
        "no deploy/Containerfile (or Containerfile/Dockerfile beside it) in the source")
