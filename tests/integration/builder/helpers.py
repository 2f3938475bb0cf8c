"""Test helpers for the builder: deadlines instead of sleeps, apps, deploys, git repos.

These write records and commands the way the api does (docs/decisions/0001-deploy-flow.md
step 1), so the builder under test sees exactly what it sees in the stack.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import subprocess
import tarfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from nats.aio.subscription import Subscription

from shared import subjects
from shared.bus import Bus, TypedKV
from shared.commands import (
    BuildRequested,
    DeployImage,
    GitSource,
    ImageSource,
    Source,
    UploadSource,
)
from shared.events import TimelineEvent, decode_event
from shared.events.deploy import GitRef
from shared.records import AppRecord, AppSpec, DeployRecord

T = TypeVar("T")

HELLO_CONTAINERFILE = """\
ARG REGISTRY
FROM ${REGISTRY}/library/busybox:stable
COPY index.html /www/index.html
RUN echo "building hello" && ls /www
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""

SLOW_CONTAINERFILE = """\
ARG REGISTRY
FROM ${{REGISTRY}}/library/busybox:stable
COPY marker /marker
RUN echo "slow step starts" && sleep {seconds} && echo "slow step ends"
"""  # a str.format template: {seconds}


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that;
    fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=test", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )
    return done.stdout.strip()


def make_git_repo(path: Path, files: dict[str, str], branch: str = "main") -> tuple[str, str]:
    """A local repository with one commit of `files`; returns (file:// url, commit sha)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    return f"file://{path}", commit_files(path, files)


def commit_files(path: Path, files: dict[str, str], message: str = "change") -> str:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def tarball(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


class Platform:
    """Writes what the api writes and reads what the builder produces."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.deploys: TypedKV[DeployRecord] | None = None
        self.apps: TypedKV[AppRecord] | None = None

    async def open(self) -> Platform:
        self.deploys = TypedKV(await self.bus.js.key_value(subjects.KV_DEPLOYS), DeployRecord)
        self.apps = TypedKV(await self.bus.js.key_value(subjects.KV_APPS), AppRecord)
        return self

    async def create_app(self, name: str, **spec: Any) -> None:
        assert self.apps is not None
        await self.apps.create(name, AppRecord(spec=AppSpec(name=name, **spec)))

    async def upload(self, app: str, data: bytes) -> UploadSource:
        digest = hashlib.sha256(data).hexdigest()
        name = f"{app}/{digest}"
        store = await self.bus.js.object_store(subjects.OBJECT_STORE_SOURCES)
        await store.put(name, data)
        return UploadSource(object_name=name, digest=f"sha256:{digest}", size=len(data))

    async def deploy(self, app: str, source: Source, deploy_id: str | None = None) -> str:
        assert self.deploys is not None and self.apps is not None
        deploy_id = deploy_id or unique("d")
        await self.deploys.create(deploy_id, DeployRecord(
            id=deploy_id, app=app, kind="deploy", source=_label(source), requested_by="test",
            description=f"Deploy {_label(source)}",  # what the api writes by default
        ))
        command = BuildRequested(deploy_id=deploy_id, app=app, source=source,
                                 requested_by="test")
        await self.bus.publish_command(subjects.build_work_subject(app), command,
                                       msg_id=f"{deploy_id}:build")
        return deploy_id

    async def record(self, deploy_id: str) -> DeployRecord:
        assert self.deploys is not None
        entry = await self.deploys.get(deploy_id)
        assert entry is not None
        return entry.value

    async def wait_status(
        self, deploy_id: str, *statuses: str, timeout: float = 60
    ) -> DeployRecord:
        async def reached() -> DeployRecord | None:
            record = await self.record(deploy_id)
            return record if record.status in statuses else None

        return await wait_for(reached, timeout, what=f"deploy {deploy_id} in {statuses}")

    async def wait_image(self, deploy_id: str, timeout: float = 90) -> DeployRecord:
        async def built() -> DeployRecord | None:
            record = await self.record(deploy_id)
            assert record.status != "failed", record.reason
            return record if record.digest else None

        return await wait_for(built, timeout, what=f"image of deploy {deploy_id}")

    async def set_status(self, deploy_id: str, status: str) -> None:
        from shared.records import transition

        assert self.deploys is not None

        def change(record: DeployRecord) -> DeployRecord | None:
            return record if transition(record, status) else None  # type: ignore[arg-type]

        await self.deploys.mutate(deploy_id, change)

    async def release_commands(self, app: str) -> list[DeployImage]:
        """Every DeployImage stored for the app (the release stream is a work queue)."""
        subject = subjects.release_work_subject(app)
        info = await self.bus.js.stream_info(subjects.STREAM_RELEASE_WORK,
                                             subjects_filter=subject)
        count = (info.state.subjects or {}).get(subject, 0)
        out: list[DeployImage] = []
        seq = info.state.first_seq
        while len(out) < count and seq <= info.state.last_seq:
            try:
                raw = await self.bus.js.get_msg(subjects.STREAM_RELEASE_WORK, seq)
            except Exception:
                seq += 1
                continue
            if raw.subject == subject:
                out.append(msgspec.json.decode(raw.data or b"", type=DeployImage))
            seq += 1
        return out

    async def build_log(self, app: str, deploy_id: str) -> str:
        store = await self.bus.js.object_store(subjects.OBJECT_STORE_BUILD_LOGS)
        result = await store.get(f"{app}/{deploy_id}")
        return (result.data or b"").decode()


def _label(source: Source) -> str:
    if isinstance(source, ImageSource):
        return source.image
    if isinstance(source, GitSource):
        return f"git {source.git.url}@{source.git.ref}"
    return f"upload {source.digest}"


def git_source(url: str, ref: str) -> GitSource:
    return GitSource(git=GitRef(url=url, ref=ref))


class Timeline:
    """Collects an app's timeline events from core NATS while a test runs."""

    def __init__(self, bus: Bus, app: str) -> None:
        self.bus = bus
        self.app = app
        self.events: list[TimelineEvent] = []
        self._sub: Subscription | None = None

    async def __aenter__(self) -> Timeline:
        async def on_msg(msg: Any) -> None:
            self.events.append(decode_event(msg.data))

        self._sub = await self.bus.nc.subscribe(subjects.app_events_filter(self.app), cb=on_msg)
        await self.bus.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def of(self, type_: type[T], deploy_id: str | None = None) -> list[T]:
        return [e for e in self.events if isinstance(e, type_)
                and (deploy_id is None or getattr(e, "deploy_id", None) == deploy_id)]
