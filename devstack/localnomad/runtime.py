"""The interface between localnomad's client side and what actually runs tasks.

A runtime starts a task from a `TaskSpec`, hands back a `TaskHandle` to wait on or
stop, probes service checks, and can re-adopt tasks that outlived a localnomad
restart. Two implementations: runtime_simulated.py (a deterministic state machine,
no processes) and runtime_podman.py (real containers). Restart policy, health and
task events stay in client.py; a runtime only reports what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class PortMapping:
    label: str
    host_port: int
    to: int  # port inside the task; 0 means the same as host_port


@dataclass
class TaskSpec:
    alloc_id: str
    namespace: str
    job_id: str
    job_version: int
    group: str
    task: str
    driver: str
    config: dict[str, Any]
    env: dict[str, str]
    ports: list[PortMapping]
    task_dir: Path
    stdout_path: Path
    stderr_path: Path
    memory_mb: int = 300
    restart_count: int = 0

    @property
    def secrets_dir(self) -> Path:
        return self.task_dir / "secrets"


@dataclass(frozen=True)
class ExitResult:
    exit_code: int
    signal: int = 0
    oom_killed: bool = False
    err: str = ""


@dataclass
class CheckSpec:
    alloc_id: str
    job_id: str
    group: str
    task: str
    service: str
    name: str
    type: str  # http | tcp
    address: str
    port: int
    path: str = ""
    method: str = "GET"
    protocol: str = "http"
    timeout_s: float = 2.0
    headers: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    passing: bool
    output: str = ""
    status_code: int = 0


class StartError(Exception):
    """The driver could not start the task (Nomad's `Driver Failure` event)."""

    def __init__(self, message: str, recoverable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.recoverable = recoverable


EmitEvent = Callable[[str, str, dict[str, Any]], None]  # (Type, DisplayMessage, extra fields)


class TaskHandle(Protocol):
    async def wait(self) -> ExitResult: ...

    async def stop(self, timeout_s: float) -> None: ...


class Runtime(Protocol):
    name: str

    async def start(self, spec: TaskSpec, emit: EmitEvent) -> TaskHandle: ...

    async def adopt(self, spec: TaskSpec) -> TaskHandle | None:
        """A handle on a task that survived a localnomad restart, or None."""
        ...

    async def probe(self, check: CheckSpec) -> CheckResult: ...

    def set_listener(self, listener: Callable[[str | None], None]) -> None:
        """Called with an alloc ID (or None for all) when checks should be re-probed."""
        ...

    async def close(self) -> None: ...
