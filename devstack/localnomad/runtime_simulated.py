"""The simulated runtime: tasks as a deterministic state machine, no processes.

By default a task starts at once, runs until stopped and passes every check. The
test-only control surface (control.py) installs `Behavior`s that select tasks by job,
group, task, job version or alloc and make them crash on start, exit with a code
after N seconds, fail to start (a driver error), start slowly, hang in pending, or
fail/pass their checks. Later behaviors win over earlier ones field by field.
Timing is real (asyncio timers); tests keep it small with small nanosecond durations.
"""

from __future__ import annotations

import asyncio
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from .runtime import CheckResult, CheckSpec, EmitEvent, ExitResult, StartError, TaskSpec

LOG_CAP = 64 * 1024


@dataclass
class Behavior:
    # selectors (None = any)
    job: str | None = None
    group: str | None = None
    task: str | None = None
    alloc: str | None = None
    job_version: int | None = None
    # effects (None = leave to an earlier behavior or the default)
    crash_on_start: int | None = None  # exit code right after starting
    exit_after_s: float | None = None
    exit_code: int | None = None
    start_delay_s: float | None = None
    hang: bool | None = None
    start_error: str | None = None
    checks: str | None = None  # "passing" | "failing"
    oom: bool | None = None
    stdout: str | None = None  # a line written to stdout at start

    SELECTORS = ("job", "group", "task", "alloc", "job_version")

    def selects(self, selector: dict[str, Any], ignore: tuple[str, ...] = ()) -> bool:
        for name in self.SELECTORS:
            want = getattr(self, name)
            if want is None or name in ignore:
                continue
            if selector.get(name) != want:
                return False
        return True

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Behavior:
        known = {f.name for f in fields(cls)}
        lowered = {k.lower(): v for k, v in data.items()}
        return cls(**{k: lowered[k] for k in known if k in lowered})


@dataclass
class _SimTask:
    spec: TaskSpec
    exited: asyncio.Future[ExitResult]
    timer: asyncio.TimerHandle | None = None
    started_at: float = field(default_factory=time.monotonic)


class SimulatedRuntime:
    name = "simulated"

    def __init__(self) -> None:
        self.behaviors: list[Behavior] = []
        self.running: dict[tuple[str, str], _SimTask] = {}
        self._listener: Callable[[str | None], None] | None = None
        self.logs: dict[tuple[str, str, str], bytearray] = {}

    def read_log(self, alloc_id: str, task: str, log_type: str) -> bytes | None:
        buf = self.logs.get((alloc_id, task, log_type))
        return None if buf is None else bytes(buf)

    # ---- control -----------------------------------------------------------------
    def add_behavior(self, behavior: Behavior) -> None:
        self.behaviors.append(behavior)
        # Apply exit effects to tasks already running when the behavior targets them.
        for task in list(self.running.values()):
            if behavior.selects(self._selector(task.spec)):
                self._arm_exit(task)
        self._changed(None)

    def clear_behaviors(self) -> None:
        self.behaviors.clear()
        self._changed(None)

    def exit_task(self, alloc_id: str, task: str | None, code: int) -> int:
        """Make running tasks of an alloc exit now; returns how many."""
        n = 0
        for (aid, tname), sim in list(self.running.items()):
            if aid == alloc_id and (task is None or task == tname) and not sim.exited.done():
                sim.exited.set_result(ExitResult(exit_code=code))
                n += 1
        return n

    def set_listener(self, listener: Callable[[str | None], None]) -> None:
        self._listener = listener

    def _changed(self, alloc_id: str | None) -> None:
        if self._listener is not None:
            self._listener(alloc_id)

    @staticmethod
    def _selector(spec: TaskSpec) -> dict[str, Any]:
        return {"job": spec.job_id, "group": spec.group, "task": spec.task,
                "alloc": spec.alloc_id, "job_version": spec.job_version}

    def effective(self, selector: dict[str, Any], ignore: tuple[str, ...] = ()) -> Behavior:
        result = Behavior()
        for b in self.behaviors:
            if b.selects(selector, ignore):
                for f in fields(Behavior):
                    if f.name in Behavior.SELECTORS:
                        continue
                    value = getattr(b, f.name)
                    if value is not None:
                        setattr(result, f.name, value)
        return result

    # ---- runtime interface ---------------------------------------------------------
    async def start(self, spec: TaskSpec, emit: EmitEvent) -> _SimHandle:
        b = self.effective(self._selector(spec))
        if b.start_error:
            raise StartError(b.start_error)
        if b.hang:
            await asyncio.Event().wait()  # never starts; cancelled on stop
        if b.start_delay_s:
            await asyncio.sleep(b.start_delay_s)
        loop = asyncio.get_running_loop()
        sim = _SimTask(spec=spec, exited=loop.create_future())
        self.running[(spec.alloc_id, spec.task)] = sim
        # Logs stay in memory: a simulated task writes a line or two, and skipping the
        # filesystem keeps thousands of simulated allocs cheap.
        line = (string.Template(b.stdout).safe_substitute(spec.env) if b.stdout is not None
                else f"simulated task {spec.task} started (alloc {spec.alloc_id[:8]})\n")
        buf = self.logs.setdefault((spec.alloc_id, spec.task, "stdout"), bytearray())
        if len(buf) < LOG_CAP:
            buf += line.encode()
        self.logs.setdefault((spec.alloc_id, spec.task, "stderr"), bytearray())
        if b.crash_on_start is not None:
            loop.call_soon(self._finish, sim, ExitResult(exit_code=b.crash_on_start))
        else:
            self._arm_exit(sim)
        return _SimHandle(self, sim)

    def _arm_exit(self, sim: _SimTask) -> None:
        b = self.effective(self._selector(sim.spec))
        if sim.timer is not None:
            sim.timer.cancel()
            sim.timer = None
        if b.oom:
            result = ExitResult(exit_code=137, signal=9, oom_killed=True)
            sim.timer = asyncio.get_running_loop().call_soon(self._finish, sim, result)  # type: ignore[assignment]
            return
        if b.exit_after_s is not None or (b.exit_code is not None and b.crash_on_start is None):
            delay = b.exit_after_s or 0.0
            remaining = max(0.0, delay - (time.monotonic() - sim.started_at))
            result = ExitResult(exit_code=b.exit_code or 0)
            sim.timer = asyncio.get_running_loop().call_later(remaining, self._finish, sim,
                                                              result)

    def _finish(self, sim: _SimTask, result: ExitResult) -> None:
        if not sim.exited.done():
            sim.exited.set_result(result)

    async def adopt(self, spec: TaskSpec) -> None:
        return None  # nothing outlives the process; the client restarts the task

    async def probe(self, check: CheckSpec) -> CheckResult:
        selector: dict[str, Any] = {"job": check.job_id, "group": check.group,
                                    "task": check.task, "alloc": check.alloc_id}
        ignore: tuple[str, ...] = () if check.task else ("task",)
        # A check matches on the job version of the tasks running in its alloc.
        for (aid, _), sim in self.running.items():
            if aid == check.alloc_id:
                selector["job_version"] = sim.spec.job_version
                break
        else:
            ignore += ("job_version",)
        b = self.effective(selector, ignore)
        if b.checks == "failing":
            return CheckResult(False, "simulated check failing", 500)
        return CheckResult(True, "simulated check passing", 200)

    async def close(self) -> None:
        for sim in self.running.values():
            if sim.timer is not None:
                sim.timer.cancel()


class _SimHandle:
    def __init__(self, runtime: SimulatedRuntime, sim: _SimTask) -> None:
        self.runtime = runtime
        self.sim = sim

    async def wait(self) -> ExitResult:
        try:
            return await asyncio.shield(self.sim.exited)
        finally:
            if self.sim.exited.done():
                self._forget()

    async def stop(self, timeout_s: float) -> None:
        if self.sim.timer is not None:
            self.sim.timer.cancel()
        if not self.sim.exited.done():
            self.sim.exited.set_result(ExitResult(exit_code=0, signal=15))
        self._forget()

    def _forget(self) -> None:
        key = (self.sim.spec.alloc_id, self.sim.spec.task)
        if self.runtime.running.get(key) is self.sim:
            del self.runtime.running[key]
