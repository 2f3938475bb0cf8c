"""The podman runtime: `docker`-driver tasks as real containers.

Pulls the task's image (plain HTTP for 127.0.0.1/localhost registries and any
`--registry-insecure` one), runs it detached with the group's dynamic ports mapped to
127.0.0.1, the task env (including rendered `Envvars` templates), the task's
`secrets/` and `local/` directories mounted at `/secrets` and `/local`, the memory
limit, and the driver config's command/args/entrypoint/work_dir. Each container is
labelled with its alloc ID so a restarted localnomad re-adopts it. Logs are copied
by `podman logs -f` into the alloc's log files for `/v1/client/fs/logs`; exit codes
and OOM kills come from `podman wait`/`inspect`. Service checks are probed for real
(HTTP status 2xx, TCP connect). The podman/buildah settings for these machines come
from devstack/podman.py; this module does not repeat them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from devstack.podman import ContainerStorage

from .durations import S
from .runtime import CheckResult, CheckSpec, EmitEvent, ExitResult, StartError, TaskSpec

log = logging.getLogger("localnomad.podman")

ALLOC_LABEL = "localnomad.alloc"
TASK_LABEL = "localnomad.task"


def registry_host(image: str) -> str | None:
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def needs_pull_always(image: str) -> bool:
    last = image.rsplit("/", 1)[-1]
    return "@" not in last and (":" not in last or last.endswith(":latest"))


class PodmanRuntime:
    name = "podman"

    def __init__(self, base: Path, insecure_registries: tuple[str, ...] = ()) -> None:
        storage = ContainerStorage(base)
        if len(str(storage.runroot)) > 50:
            # podman refuses a runroot longer than 50 characters; say so at startup.
            raise ValueError(f"--podman-root {base} is too long: podman needs its runroot "
                             f"({storage.runroot}) to be at most 50 characters")
        self.storage = storage.prepare()
        self.env = self.storage.env()
        self.insecure = set(insecure_registries)
        self._listener: Callable[[str | None], None] | None = None
        self._helpers: set[asyncio.subprocess.Process] = set()
        self._pull_locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    def set_listener(self, listener: Callable[[str | None], None]) -> None:
        self._listener = listener

    async def podman(self, *args: str, timeout: float = 300.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.storage.podman(*args), env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    def tls_args(self, image: str) -> list[str]:
        host = registry_host(image)
        if host is None:
            return []
        hostname = host.split(":")[0]
        if hostname in ("127.0.0.1", "localhost") or host in self.insecure:
            return ["--tls-verify=false"]
        return []

    async def _ensure_image(self, spec: TaskSpec, emit: EmitEvent) -> str:
        image = str(spec.config.get("image") or "")
        if not image:
            raise StartError("image is required", recoverable=False)
        lock = self._pull_locks.setdefault(image, asyncio.Lock())
        async with lock:
            force = bool(spec.config.get("force_pull")) or needs_pull_always(image)
            if not force:
                rc, _, _ = await self.podman("image", "exists", image, timeout=30)
                if rc == 0:
                    return image
            emit("Driver", f"Downloading image {image}", {})
            timeout_ns = spec.config.get("image_pull_timeout")
            timeout = 300.0
            if isinstance(timeout_ns, str) and timeout_ns:
                from .durations import parse_go_duration

                with contextlib.suppress(ValueError):
                    timeout = parse_go_duration(timeout_ns) / S
            try:
                rc, _, err = await self.podman("pull", "--quiet", *self.tls_args(image), image,
                                               timeout=timeout)
            except TimeoutError:
                raise StartError(f"failed to pull image {image}: timed out after "
                                 f"{timeout:.0f}s") from None
            if rc != 0:
                reason = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
                raise StartError(f"failed to pull image {image}: {reason}")
        return image

    def _run_args(self, spec: TaskSpec, image: str, name: str) -> list[str]:
        cfg = spec.config
        args = ["run", "-d", "--name", name, "--label", f"{ALLOC_LABEL}={spec.alloc_id}",
                "--label", f"{TASK_LABEL}={spec.task}", "--log-driver", "k8s-file",
                "--memory", f"{max(spec.memory_mb, 6)}m"]
        for port in spec.ports:
            args += ["-p", f"127.0.0.1:{port.host_port}:{port.to or port.host_port}"]
        for key, value in sorted(spec.env.items()):
            args += ["-e", f"{key}={value}"]
        local = spec.task_dir / "local"
        local.mkdir(parents=True, exist_ok=True)
        spec.secrets_dir.mkdir(parents=True, exist_ok=True)
        args += ["-v", f"{spec.secrets_dir}:/secrets:ro", "-v", f"{local}:/local"]
        if cfg.get("work_dir"):
            args += ["--workdir", str(cfg["work_dir"])]
        if cfg.get("hostname"):
            args += ["--hostname", str(cfg["hostname"])]
        for key, value in (cfg.get("labels") or {}).items() if isinstance(
                cfg.get("labels"), dict) else []:
            args += ["--label", f"{key}={value}"]
        entrypoint = cfg.get("entrypoint")
        if entrypoint:
            import json

            args += ["--entrypoint", json.dumps(list(entrypoint))]
        args.append(image)
        if cfg.get("command"):
            args.append(str(cfg["command"]))
        args += [str(a) for a in cfg.get("args") or []]
        return args

    @staticmethod
    def container_name(spec: TaskSpec) -> str:
        return f"ln-{spec.alloc_id}-{spec.task}"

    async def start(self, spec: TaskSpec, emit: EmitEvent) -> PodmanHandle:
        if spec.driver not in ("docker", "podman"):
            raise StartError(f"driver {spec.driver!r} is not supported by localnomad's podman "
                             f"runtime", recoverable=False)
        image = await self._ensure_image(spec, emit)
        name = self.container_name(spec)
        await self.podman("rm", "-f", "-t", "0", name, timeout=60)
        rc, out, err = await self.podman(*self._run_args(spec, image, name), timeout=120)
        if rc != 0:
            raise StartError(f"failed to start container: {err.strip() or out.strip()}")
        handle = PodmanHandle(self, spec, name)
        await handle.attach()
        return handle

    async def adopt(self, spec: TaskSpec) -> PodmanHandle | None:
        name = self.container_name(spec)
        rc, out, _ = await self.podman("inspect", "--format", "{{.State.Status}}", name,
                                       timeout=30)
        if rc != 0:
            return None
        if out.strip() != "running":
            await self.podman("rm", "-f", "-t", "0", name, timeout=60)
            return None
        handle = PodmanHandle(self, spec, name)
        await handle.attach()
        return handle

    async def helper(self, *args: str, stdout: Any, stderr: Any) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *self.storage.podman(*args), env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout, stderr=stderr)
        self._helpers.add(proc)
        return proc

    def forget(self, proc: asyncio.subprocess.Process) -> None:
        self._helpers.discard(proc)

    async def probe(self, check: CheckSpec) -> CheckResult:
        if check.type == "tcp":
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(check.address, check.port), check.timeout_s)
            except (OSError, TimeoutError) as exc:
                return CheckResult(False, f"dial tcp {check.address}:{check.port}: {exc}")
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return CheckResult(True, "TCP connect succeeded")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{check.protocol or 'http'}://{check.address}:{check.port}{check.path or '/'}"
        headers = {k: v[0] for k, v in (check.headers or {}).items() if v}
        try:
            async with self._session.request(
                    check.method or "GET", url, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=check.timeout_s)) as resp:
                body = (await resp.content.read(512)).decode(errors="replace")
                return CheckResult(200 <= resp.status < 300,
                                   f"HTTP {resp.status}: {body}", resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return CheckResult(False, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        for proc in list(self._helpers):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
        self._helpers.clear()
        if self._session is not None:
            await self._session.close()


class PodmanHandle:
    def __init__(self, runtime: PodmanRuntime, spec: TaskSpec, name: str) -> None:
        self.runtime = runtime
        self.spec = spec
        self.name = name
        self._logs: asyncio.subprocess.Process | None = None
        self._files: list[Any] = []

    async def attach(self) -> None:
        # Append, as Nomad's log collector does: a restarted task's file keeps what the
        # runs before it wrote (a crash-looping task's last words stay readable); a new
        # allocation has a new directory, so its files start empty.
        mode = "ab"
        self.spec.stdout_path.parent.mkdir(parents=True, exist_ok=True)
        # Small local files, opened once per container start; owned by the log follower.
        out = open(self.spec.stdout_path, mode)  # noqa: SIM115, ASYNC230
        err = open(self.spec.stderr_path, mode)  # noqa: SIM115, ASYNC230
        self._files = [out, err]
        self._logs = await self.runtime.helper("logs", "-f", self.name, stdout=out, stderr=err)

    async def wait(self) -> ExitResult:
        proc = await self.runtime.helper("wait", self.name, stdout=asyncio.subprocess.PIPE,
                                         stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        finally:
            self.runtime.forget(proc)
        code_text = out.decode().strip().splitlines()[-1] if out.strip() else ""
        try:
            code = int(code_text)
        except ValueError:
            code = -1
        rc, info, _ = await self.runtime.podman(
            "inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}}", self.name,
            timeout=30)
        oom = rc == 0 and info.strip().startswith("true")
        if rc == 0 and code == -1:
            with contextlib.suppress(ValueError, IndexError):
                code = int(info.split()[1])
        await self._finish_logs()
        await self.runtime.podman("rm", "-f", "-t", "0", self.name, timeout=60)
        return ExitResult(exit_code=code, signal=9 if oom else 0, oom_killed=oom,
                          err="" if code != -1 else err.decode(errors="replace").strip())

    async def stop(self, timeout_s: float) -> None:
        await self.runtime.podman("stop", "-t", str(max(0, int(timeout_s))), self.name,
                                  timeout=timeout_s + 30)
        await self._finish_logs()
        await self.runtime.podman("rm", "-f", "-t", "0", self.name, timeout=60)

    async def _finish_logs(self) -> None:
        if self._logs is not None:
            try:
                await asyncio.wait_for(self._logs.wait(), 2)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._logs.kill()
            self.runtime.forget(self._logs)
            self._logs = None
        for fh in self._files:
            with contextlib.suppress(OSError):
                fh.close()
        self._files = []
