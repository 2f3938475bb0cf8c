"""One build, from source to a pushed image digest: the steps, without the bookkeeping.

`ImagePipeline.run(command, app_spec, workdir, log)` does, for each kind of source:
- image: resolve the reference to a digest in its registry (no build);
- git: shallow fetch of the ref, then build and push;
- upload: fetch the tarball from the object store, verify and extract it, then build and push.
Builds use buildah (services.builder.buildah) with `--build-arg REGISTRY=<registry>` and
push to `<registry>/<app>:<commit[:12] or source digest[:12]>`, so the same source always
gets the same name; the pushed digest comes from buildah's `--digestfile`.

Outcomes: a `BuiltImage`; `BuildFailed` for anything the source is to blame for (a failing
step, an unknown ref, a missing Containerfile); shared.errors.TemporaryError for what may
pass (registry or Vault down). Deploy records, events and supersede checks are the
worker's job (services.builder.worker); cancelling `run` stops the running command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore

from services.builder.buildah import (
    StepTracker,
    build_command,
    builder_env,
    find_containerfile,
    push_command,
)
from services.builder.credentials import CredentialStore, write_authfile
from services.builder.logstream import BuildLogStream
from services.builder.process import CommandNotFound, run_streaming
from services.builder.references import InvalidReference, parse_image_ref
from services.builder.registry import ImageNotFound, RegistryClient
from services.builder.sources import (
    SourceError,
    extract_tarball,
    fetch_git,
    git_host,
    verify_upload,
)
from shared.commands import BuildRequested, GitSource, ImageSource, UploadSource
from shared.containers import ContainerStorage
from shared.errors import BackendUnavailable, PermanentError
from shared.logging import get_logger
from shared.records import AppSpec
from shared.settings import BuilderSettings

_log = get_logger(__name__)

LOG_TAIL_LINES = 15
TAG_LENGTH = 12


class BuildFailed(PermanentError):
    """The build cannot succeed as asked; `reason` is what the deploy record says."""

    def __init__(self, reason: str, *, step: str | None = None) -> None:
        super().__init__(reason)
        self.step = step


@dataclass(frozen=True)
class BuiltImage:
    image: str  # what was pushed (repo:tag), or the reference given for image sources
    pinned: str  # repo@sha256:…, what a release pins
    digest: str
    description: str  # the release's one-liner, e.g. "Deploy 3f2c1a9"
    cached: bool = False
    commit: str | None = None


def source_label(source: ImageSource | GitSource | UploadSource) -> str:
    """What is being deployed, for people (BuildStarted.source)."""
    if isinstance(source, ImageSource):
        return f"image {source.image}"
    if isinstance(source, GitSource):
        return f"git {source.git.url}@{source.git.ref}"
    return f"upload {source.digest.removeprefix('sha256:')[:TAG_LENGTH]} ({source.size} bytes)"


class ImagePipeline:
    def __init__(
        self,
        settings: BuilderSettings,
        storage: ContainerStorage,
        registry: RegistryClient,
        credentials: CredentialStore,
        sources: ObjectStore,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.registry = registry
        self.credentials = credentials
        self.sources = sources

    async def run(
        self, command: BuildRequested, app: AppSpec, workdir: Path, log: BuildLogStream
    ) -> BuiltImage:
        source = command.source
        if isinstance(source, ImageSource):
            return await self._resolve(source, log)
        context = workdir / "src"
        if isinstance(source, GitSource):
            host = git_host(source.git.url)
            credential = await self.credentials.git(host) if host else None
            if credential is not None:
                log.scrubber.add_credential(credential.username, credential.password)
            commit = await fetch_git(
                source.git, context, on_line=log.line, env=builder_env(self.storage),
                credential=credential, allow_file=self.settings.allow_file_git_urls,
            )
            tag_id, description = commit[:TAG_LENGTH], f"Deploy {commit[:7]}"
        else:
            data = await self._download(source)
            hexdigest = verify_upload(data, source.digest)
            log.line(f"unpacking uploaded source {hexdigest[:TAG_LENGTH]} ({len(data)} bytes)")
            # Unpacking a large tarball is blocking disk work: off the event loop.
            context = await asyncio.to_thread(extract_tarball, data, context)
            tag_id, description = hexdigest[:TAG_LENGTH], f"Deploy upload {hexdigest[:7]}"
            commit = None
        built = await self._build_and_push(command.app, app, context, workdir, tag_id, log)
        return BuiltImage(image=built[0], pinned=built[1], digest=built[2],
                          description=description, cached=built[3], commit=commit)

    async def _resolve(self, source: ImageSource, log: BuildLogStream) -> BuiltImage:
        try:
            ref = parse_image_ref(source.image)
        except InvalidReference as exc:
            raise BuildFailed(f"image reference {source.image!r} is invalid: {exc}") from exc
        credential = await self.credentials.registry(ref.registry)
        if credential is not None:
            log.scrubber.add_credential(credential.username, credential.password)
        log.line(f"resolving {ref}")
        try:
            digest = await self.registry.resolve(ref, credential)
        except ImageNotFound as exc:
            raise BuildFailed(str(exc)) from exc
        if ref.digest and digest != ref.digest:
            raise BuildFailed(f"image {ref} resolves to {digest}, not the digest asked for")
        log.line(f"resolved {ref} to {digest}")
        return BuiltImage(image=str(ref), pinned=ref.pinned(digest), digest=digest,
                          description=f"Deploy {ref}", cached=True)

    async def _download(self, source: UploadSource) -> bytes:
        try:
            result = await self.sources.get(source.object_name)
        except ObjectNotFoundError as exc:
            raise BuildFailed(
                f"uploaded source {source.object_name} is gone (expired or never stored)"
            ) from exc
        except Exception as exc:  # nats errors of many kinds: all mean "try again later"
            raise BackendUnavailable("nats", f"reading uploaded source: {exc!r}") from exc
        return bytes(result.data or b"")

    async def _build_and_push(
        self, app_name: str, app: AppSpec, context: Path, workdir: Path, tag_id: str,
        log: BuildLogStream,
    ) -> tuple[str, str, str, bool]:
        containerfile = find_containerfile(context, app.dockerfile)
        if containerfile is None:
            raise BuildFailed(
                f"no {app.dockerfile} (or Containerfile/Dockerfile beside it) in the source"
            )
        registry = self.settings.registry
        tag = f"{registry}/{app_name}:{tag_id}"
        tls_verify = not self.registry.plain_http(registry)
        authfile = None
        credential = await self.credentials.registry(registry)
        if credential is not None:
            log.scrubber.add_credential(credential.username, credential.password)
            authfile = write_authfile(workdir / "auth.json", registry, credential)
        self.storage.prepare()
        env = builder_env(self.storage)
        steps = StepTracker()

        def on_build_line(line: str) -> None:
            steps.observe(line)
            log.line(line)

        log.line(f"$ buildah bud -f {containerfile.name} -t {tag}")
        started = time.monotonic()
        argv = build_command(
            self.storage, context=context, containerfile=containerfile, tag=tag,
            build_args={"REGISTRY": registry}, tls_verify=tls_verify, authfile=authfile,
        )
        code = await self._run(argv, on_build_line, env)
        if code != 0:
            where = steps.describe()
            reason = f"build failed at {where}" if where else f"build failed (exit code {code})"
            if steps.error:
                reason += f": {steps.error}"
            tail = "\n".join(log.tail(LOG_TAIL_LINES))
            raise BuildFailed(f"{reason}\n--- log tail ---\n{tail}", step=steps.step)
        log.line(f"built {tag} in {time.monotonic() - started:.2f}s")
        cached = steps.fully_cached
        digestfile = workdir / "digest"
        log.line(f"$ buildah push {tag}")
        argv = push_command(self.storage, tag=tag, digestfile=digestfile,
                            tls_verify=tls_verify, authfile=authfile)
        code = await self._run(argv, log.line, env)
        digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if code != 0 or not digest.startswith("sha256:"):
            # Pushing fails when the registry is down or full: worth another try.
            raise BackendUnavailable("registry", f"push of {tag} failed (exit code {code})")
        log.line(f"pushed {tag} as {digest}")
        return tag, f"{registry}/{app_name}@{digest}", digest, cached

    async def remove_working_containers(self) -> None:
        """`buildah rm --all`: unmount and drop working containers (not images, not cache).

        Only safe while no build runs on this storage; a builder copy owns its storage.
        """
        try:
            code = await run_streaming(self.storage.buildah("rm", "--all"), lambda _line: None,
                                       env=builder_env(self.storage))
        except CommandNotFound:
            return
        if code != 0:
            _log.warning("buildah rm --all failed", exit_code=code)

    async def _run(
        self, argv: list[str], on_line: Callable[[str], None], env: dict[str, str]
    ) -> int:
        try:
            return await run_streaming(argv, on_line, env=env)
        except CommandNotFound as exc:
            raise BackendUnavailable("buildah", str(exc)) from exc


__all__ = ["BuildFailed", "BuiltImage", "ImagePipeline", "SourceError", "source_label"]
