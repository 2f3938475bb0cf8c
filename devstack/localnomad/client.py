"""The client side of the single node: runs allocations and reports on them.

Per allocation an `AllocRunner` renders templates, starts each task through the
runtime, applies the restart policy, probes Nomad-provider service checks, and
decides deployment health (all tasks running and, in `checks` mode, all checks
passing, continuously for min_healthy_time; unhealthy on a failed task or at
healthy_deadline). It never writes state itself: it marks the alloc dirty and the
server applies a batch of client updates in one `AllocationUpdated` transaction,
as Nomad clients batch their updates. Scheduling decisions stay in the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .canonicalize import find_group
from .durations import S, format_go_duration
from .runtime import (
    CheckResult,
    CheckSpec,
    ExitResult,
    PortMapping,
    Runtime,
    StartError,
    TaskHandle,
    TaskSpec,
)
from .templates import TemplateError, TemplateRenderer

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("localnomad.client")

ZERO_TIME = "0001-01-01T00:00:00Z"
MAX_TASK_EVENTS = 10


def rfc3339(ts: float | None = None) -> str:
    t = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


def task_event(etype: str, message: str = "", **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "Type": etype, "Time": time.time_ns(), "DisplayMessage": message, "Details": {},
        "Message": "", "FailsTask": False, "RestartReason": "", "SetupError": "",
        "DriverError": "", "DriverMessage": "", "ExitCode": 0, "Signal": 0, "KillReason": "",
        "KillTimeout": 0, "KillError": "", "StartDelay": 0, "DownloadError": "",
        "ValidationError": "", "DiskLimit": 0, "FailedSibling": "", "VaultError": "",
        "TaskSignalReason": "", "TaskSignal": "", "GenericSource": "",
    }
    ev.update(extra)
    details = {k: str(v) for k, v in extra.items() if v not in ("", 0, False, None)}
    ev["Details"] = details
    return ev


def new_task_state() -> dict[str, Any]:
    return {"State": "pending", "Failed": False, "Restarts": 0, "LastRestart": ZERO_TIME,
            "StartedAt": None, "FinishedAt": None, "Events": [], "TaskHandle": None}


@dataclass
class CheckState:
    spec: CheckSpec
    id: str
    interval_s: float
    status: str = "pending"  # success | failure | pending
    output: str = ""
    status_code: int = 0
    timestamp: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Check": self.spec.name, "Group": f"{self.spec.job_id}."
                f"{self.spec.group}", "Mode": "healthiness", "Output": self.output,
                "Service": self.spec.service, "Task": self.spec.task,
                "Status": self.status, "StatusCode": self.status_code,
                "Timestamp": self.timestamp}


@dataclass
class ClientUpdate:
    """What a runner wants written to its alloc on the next flush."""

    task_states: dict[str, Any] | None = None
    client_status: str | None = None
    client_description: str | None = None
    health: bool | None = None
    health_for_deployment: str = ""


class Client:
    def __init__(self, server: Server, runtime: Runtime, alloc_root: Path,
                 templates: TemplateRenderer) -> None:
        self.server = server
        self.runtime = runtime
        self.alloc_root = alloc_root
        self.templates = templates
        self.runners: dict[str, AllocRunner] = {}
        self.pending: dict[str, ClientUpdate] = {}
        self._flush_scheduled = False
        runtime.set_listener(self._runtime_changed)

    def _runtime_changed(self, alloc_id: str | None) -> None:
        for runner in self.runners.values():
            if alloc_id is None or runner.alloc_id == alloc_id:
                runner.reprobe()

    def sync(self, alloc: dict[str, Any], adopt: bool = False) -> None:
        """React to a server-side change of an alloc (placement, stop, new deployment)."""
        runner = self.runners.get(alloc["ID"])
        if alloc["DesiredStatus"] != "run":
            if runner is not None:
                runner.request_stop(alloc.get("DesiredDescription") or "")
            return
        if alloc["ClientStatus"] in ("complete", "failed", "lost"):
            return
        if runner is None:
            runner = AllocRunner(self, alloc["ID"])
            self.runners[alloc["ID"]] = runner
            runner.start(adopt=adopt)
        else:
            runner.job_updated()

    def update(self, alloc_id: str, **changes: Any) -> None:
        pend = self.pending.setdefault(alloc_id, ClientUpdate())
        for key, value in changes.items():
            setattr(pend, key, value)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self.pending = self.pending, {}
        if batch:
            self.server.apply_client_updates(batch)

    def runner_done(self, alloc_id: str) -> None:
        self.runners.pop(alloc_id, None)

    def checks_of(self, alloc_id: str) -> dict[str, Any]:
        runner = self.runners.get(alloc_id)
        if runner is None:
            return {}
        return {c.id: c.to_json() for c in runner.checks}

    async def close(self) -> None:
        runners = list(self.runners.values())
        for runner in runners:
            runner.detach()
        await asyncio.gather(*(r.wait_closed() for r in runners), return_exceptions=True)


class AllocRunner:
    def __init__(self, client: Client, alloc_id: str) -> None:
        self.client = client
        self.alloc_id = alloc_id
        self.task_states: dict[str, dict[str, Any]] = {}
        self.task_runners: dict[str, TaskRunner] = {}
        self.checks: list[CheckState] = []
        self._health_waker = Waker()
        self._check_waker = Waker()
        self._reprobe_flag = False
        self.stopping = False
        self.detached = False  # localnomad is shutting down: leave containers running
        self._tasks: list[asyncio.Task[Any]] = []
        self._health_task: asyncio.Task[Any] | None = None
        self._check_task: asyncio.Task[Any] | None = None
        self.client_status = "pending"

    @property
    def alloc(self) -> dict[str, Any]:
        return self.client.server.state.allocs[self.alloc_id]

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.alloc_id[:8]}")
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alloc runner task failed alloc=%s task=%s", self.alloc_id,
                      task.get_name(), exc_info=task.exception())

    def start(self, adopt: bool = False) -> None:
        alloc = self.alloc
        group = find_group(alloc["Job"], alloc["TaskGroup"]) or {}
        existing = alloc.get("TaskStates") or {}
        for task in group.get("Tasks") or []:
            name = task["Name"]
            if adopt and name in existing:
                state = copy_state(existing[name])
            else:
                state = new_task_state()
                state["Events"].append(task_event("Received", "Task received by client"))
            self.task_states[name] = state
            runner = TaskRunner(self, task, group)
            self.task_runners[name] = runner
            self._spawn(runner.run(adopt=adopt), f"task-{name}")
        self.publish()
        self.checks = self._build_checks(alloc, group)
        if self.checks:
            self._check_task = self._spawn(self._run_checks(), "checks")
        self._start_health()

    def job_updated(self) -> None:
        """An in-place update or a new deployment: health is decided again."""
        alloc = self.alloc
        dstatus = alloc.get("DeploymentStatus") or {}
        if alloc.get("DeploymentID") and dstatus.get("Healthy") is None:
            self._start_health()

    def _start_health(self) -> None:
        alloc = self.alloc
        if not alloc.get("DeploymentID"):
            return
        if (alloc.get("DeploymentStatus") or {}).get("Healthy") is not None:
            return
        group = find_group(alloc["Job"], alloc["TaskGroup"]) or {}
        update = group.get("Update") or {}
        if update.get("HealthCheck") == "manual":
            return
        if self._health_task is not None and not self._health_task.done():
            self._health_task.cancel()
        self._health_task = self._spawn(
            self._track_health(alloc["DeploymentID"], update), "health")

    def notify(self) -> None:
        self._health_waker.wake()
        self._check_waker.wake()

    def reprobe(self) -> None:
        self._reprobe_flag = True
        self._check_waker.wake()

    def publish(self) -> None:
        """Recompute the client status and queue an update to the server."""
        states = self.task_states.values()
        if any(s["Failed"] for s in states):
            status = "failed"
        elif states and all(s["State"] == "dead" for s in states):
            status = "complete"
        elif any(s["State"] == "running" for s in states):
            status = "running"
        else:
            status = "pending"
        self.client_status = status
        desc = {"failed": "Failed tasks", "complete": "All tasks have completed",
                "running": "Tasks are running", "pending": "No tasks have started"}[status]
        self.client.update(self.alloc_id, task_states=copy_states(self.task_states),
                           client_status=status, client_description=desc)
        self.notify()
        if status in ("failed", "complete"):
            self._finish()

    def _finish(self) -> None:
        for t in (self._check_task,):
            if t is not None and not t.done():
                t.cancel()

    def request_stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self._health_task is not None and not self._health_task.done():
            self._health_task.cancel()
        for runner in self.task_runners.values():
            runner.stop()
        if not self.task_runners:
            self.client.runner_done(self.alloc_id)

    def detach(self) -> None:
        self.detached = True
        for t in list(self._tasks):
            t.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def task_finished(self) -> None:
        if all(r.finished for r in self.task_runners.values()):
            self._finish()
            if self._health_task is not None and not self._health_task.done() \
                    and not self.stopping:
                return  # it still has to report the alloc unhealthy; it ends right after
            self.client.runner_done(self.alloc_id)

    def sibling_failed(self, failed_task: str) -> None:
        for name, runner in self.task_runners.items():
            if name != failed_task and not runner.finished:
                runner.stop(sibling=failed_task)

    # ---- checks ----------------------------------------------------------------------
    def _build_checks(self, alloc: dict[str, Any], group: dict[str, Any]) -> list[CheckState]:
        ports = host_ports(alloc)
        out: list[CheckState] = []
        services: list[tuple[str, dict[str, Any]]] = [
            ("", s) for s in group.get("Services") or []]
        for task in group.get("Tasks") or []:
            services.extend((task["Name"], s) for s in task.get("Services") or [])
        for task_name, svc in services:
            if svc.get("Provider") != "nomad":
                continue
            for check in svc.get("Checks") or []:
                label = check.get("PortLabel") or svc.get("PortLabel") or ""
                port = ports.get(label, int(label) if label.isdigit() else 0)
                cid = hashlib.sha1(
                    f"{alloc['ID']}{svc['Name']}{check['Name']}".encode()).hexdigest()
                spec = CheckSpec(
                    alloc_id=alloc["ID"], job_id=alloc["JobID"], group=alloc["TaskGroup"],
                    task=task_name or check.get("TaskName") or "", service=svc["Name"],
                    name=check.get("Name") or f"service: \"{svc['Name']}\" check",
                    type=check["Type"], address="127.0.0.1", port=port,
                    path=check.get("Path") or "/", method=check.get("Method") or "GET",
                    protocol=check.get("Protocol") or "http",
                    timeout_s=(check.get("Timeout") or 2 * S) / S,
                    headers=check.get("Header") or {})
                out.append(CheckState(spec=spec, id=cid,
                                      interval_s=(check.get("Interval") or 10 * S) / S))
        return out

    def tasks_running(self) -> bool:
        return bool(self.task_states) and all(
            s["State"] == "running" for s in self.task_states.values())

    async def _run_checks(self) -> None:
        loop = asyncio.get_running_loop()
        next_due = dict.fromkeys(range(len(self.checks)), 0.0)
        while True:
            if not self.tasks_running():
                for c in self.checks:
                    c.status = "pending"
                next_due = dict.fromkeys(next_due, 0.0)
                await self._check_waker.wait(None)
                continue
            now = loop.time()
            force, self._reprobe_flag = self._reprobe_flag, False
            due = [i for i, t in next_due.items() if t <= now or force]
            if due:
                results = await asyncio.gather(
                    *(self._probe(self.checks[i]) for i in due), return_exceptions=True)
                changed = False
                for i, res in zip(due, results, strict=True):
                    check = self.checks[i]
                    if isinstance(res, BaseException):
                        res = CheckResult(False, str(res))
                    status = "success" if res.passing else "failure"
                    changed |= status != check.status
                    check.status, check.output = status, res.output
                    check.status_code, check.timestamp = res.status_code, int(time.time())
                    next_due[i] = loop.time() + check.interval_s
                if changed:
                    self._health_waker.wake()
            await self._check_waker.wait(max(0.0, min(next_due.values()) - loop.time()))

    async def _probe(self, check: CheckState) -> CheckResult:
        try:
            return await asyncio.wait_for(self.client.runtime.probe(check.spec),
                                          check.spec.timeout_s + 1)
        except TimeoutError:
            return CheckResult(False, "check timed out")

    # ---- health ----------------------------------------------------------------------
    async def _track_health(self, deployment_id: str, update: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        mode = update.get("HealthCheck") or "checks"
        mht = (update.get("MinHealthyTime") or 0) / S
        hd_ns = update.get("HealthyDeadline") or 5 * 60 * S
        deadline = loop.time() + hd_ns / S
        healthy_since: float | None = None
        while True:
            self._health_waker.flag = False
            if any(s["Failed"] for s in self.task_states.values()) or any(
                    s["State"] == "dead" for s in self.task_states.values()):
                self._report_health(deployment_id, False, "Unhealthy because of failed task")
                return
            running = self.tasks_running()
            checks_ok = mode == "task_states" or all(c.status == "success" for c in self.checks)
            now = loop.time()
            if running and checks_ok:
                if healthy_since is None:
                    healthy_since = now
                if now - healthy_since >= mht:
                    self._report_health(deployment_id, True, "")
                    return
                wake = min(healthy_since + mht, deadline)
            else:
                healthy_since = None
                wake = deadline
            if now >= deadline:
                self._report_health(deployment_id, False,
                                    self._deadline_reason(running, checks_ok, mht, hd_ns))
                return
            await self._health_waker.wait(max(0.0, wake - now))

    def _deadline_reason(self, running: bool, checks_ok: bool, mht: float, hd_ns: int) -> str:
        hd = format_go_duration(hd_ns)
        if not running:
            return f"Task not running by healthy_deadline of {hd}"
        if not checks_ok:
            failing = sorted({c.spec.service for c in self.checks if c.status != "success"})
            return f"Services not healthy by deadline: {', '.join(failing)}"
        return (f"Task not running for min_healthy_time of "
                f"{format_go_duration(int(mht * S))} by healthy_deadline of {hd}")

    def _report_health(self, deployment_id: str, healthy: bool, reason: str) -> None:
        if not healthy:
            for state in self.task_states.values():
                add_event(state, task_event("Alloc Unhealthy", reason))
            self.client.update(self.alloc_id, task_states=copy_states(self.task_states))
        self.client.update(self.alloc_id, health=healthy, health_for_deployment=deployment_id)
        if self.task_runners and all(r.finished for r in self.task_runners.values()):
            self.client.runner_done(self.alloc_id)


class Waker:
    """A resettable wake-up with an optional timeout. Cheaper than asyncio.Event plus
    wait_for, which costs a task per wait; there is one of these per alloc loop."""

    def __init__(self) -> None:
        self.flag = False
        self._fut: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self.flag = True
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        if self.flag:
            self.flag = False
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._fut = fut
        handle = loop.call_later(timeout, _resolve, fut) if timeout is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            self._fut = None
            self.flag = False


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    # Task events are never mutated once added, so sharing them is safe.
    return {**state, "Events": list(state["Events"])}


def copy_states(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: copy_state(st) for name, st in states.items()}


def add_event(state: dict[str, Any], event: dict[str, Any]) -> None:
    state["Events"].append(event)
    if len(state["Events"]) > MAX_TASK_EVENTS:
        del state["Events"][: len(state["Events"]) - MAX_TASK_EVENTS]


def host_ports(alloc: dict[str, Any]) -> dict[str, int]:
    shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
    return {p["Label"]: p["Value"] for p in shared.get("Ports") or []}


@dataclass
class _RestartTracker:
    attempts: int
    interval_ns: int
    delay_ns: int
    mode: str
    count: int = 0
    window_start: float = field(default_factory=time.monotonic)

    def decide(self) -> tuple[bool, float, str]:
        """(restart?, delay seconds, reason) after an exit, as Nomad's restart tracker."""
        now = time.monotonic()
        if self.interval_ns and now - self.window_start > self.interval_ns / S:
            self.count = 0
            self.window_start = now
        if self.count < self.attempts:
            self.count += 1
            return True, self.delay_ns / S, "Restart within policy"
        interval = format_go_duration(self.interval_ns)
        if self.mode == "delay":
            wait = max(0.0, self.window_start + self.interval_ns / S - now)
            self.count = 0
            self.window_start = now + wait
            return True, wait, (f"Exceeded allowed attempts {self.attempts} in interval "
                                f"{interval} and mode is \"delay\"")
        return False, 0.0, (f"Exceeded allowed attempts {self.attempts} in interval "
                            f"{interval} and mode is \"fail\"")


class TaskRunner:
    def __init__(self, alloc_runner: AllocRunner, task: dict[str, Any],
                 group: dict[str, Any]) -> None:
        self.ar = alloc_runner
        self.task = task
        self.group = group
        self.name: str = task["Name"]
        self.handle: TaskHandle | None = None
        self.finished = False
        self._stop = asyncio.Event()
        self._sibling = ""
        policy = task.get("RestartPolicy") or group.get("RestartPolicy") or {}
        self.restarts = _RestartTracker(int(policy.get("Attempts") or 0),
                                        int(policy.get("Interval") or 0),
                                        int(policy.get("Delay") or 0),
                                        str(policy.get("Mode") or "fail"))

    @property
    def state(self) -> dict[str, Any]:
        return self.ar.task_states[self.name]

    def stop(self, sibling: str = "") -> None:
        self._sibling = sibling
        self._stop.set()

    def _event(self, etype: str, message: str = "", **extra: Any) -> None:
        add_event(self.state, task_event(etype, message, **extra))

    def _set(self, state: str, failed: bool | None = None) -> None:
        st = self.state
        st["State"] = state
        if failed is not None:
            st["Failed"] = failed
        if state == "running":
            st["StartedAt"] = rfc3339()
            st["FinishedAt"] = None
        elif state == "dead":
            st["FinishedAt"] = rfc3339()
        self.ar.publish()

    def _spec(self) -> TaskSpec:
        alloc = self.ar.alloc
        base = self.ar.client.alloc_root / alloc["ID"]
        logs = base / "alloc" / "logs"
        shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
        ports = [PortMapping(p["Label"], p["Value"], p.get("To") or 0)
                 for p in shared.get("Ports") or []]
        env = dict(self.task.get("Env") or {})
        env.update(nomad_env(alloc, self.task, ports))
        return TaskSpec(
            alloc_id=alloc["ID"], namespace=alloc["Namespace"], job_id=alloc["JobID"],
            job_version=int(alloc["Job"]["Version"]), group=alloc["TaskGroup"],
            task=self.name, driver=self.task.get("Driver") or "", config=dict(
                self.task.get("Config") or {}), env=env, ports=ports,
            task_dir=base / self.name, stdout_path=logs / f"{self.name}.stdout.0",
            stderr_path=logs / f"{self.name}.stderr.0",
            memory_mb=int((self.task.get("Resources") or {}).get("MemoryMB") or 300),
            restart_count=int(self.state["Restarts"]))

    async def run(self, adopt: bool = False) -> None:
        try:
            await self._run(adopt)
        finally:
            if not self.ar.detached:
                self.finished = True
                self.ar.task_finished()

    async def _run(self, adopt: bool) -> None:
        if adopt:
            spec = self._spec()
            handle = await self.ar.client.runtime.adopt(spec)
            if handle is not None:
                self.handle = handle
                if self.state["State"] != "running":
                    self._set("running")
                if await self._wait_exit(handle):
                    return
            else:
                self.state["State"] = "pending"
        else:
            self._event("Task Setup", "Building Task Directory")
            self.ar.publish()
        while True:
            spec = self._spec()  # directories are created by whoever writes into them
            try:
                template_env = await self.ar.client.templates.render_task(
                    self.task, spec.task_dir, self.ar.alloc)
            except TemplateError as exc:
                self._event("Killing", f"Template failed: {exc}", FailsTask=True,
                            KillReason=f"Template failed: {exc}")
                self._set("dead", failed=True)
                self.ar.sibling_failed(self.name)
                return
            spec.env.update(template_env)
            if self._stop.is_set():
                self._set("dead", failed=False)
                return
            try:
                starting = asyncio.ensure_future(
                    self.ar.client.runtime.start(spec, self._runtime_event))
                stop_wait = asyncio.ensure_future(self._stop.wait())
                try:
                    await asyncio.wait({starting, stop_wait},
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop_wait.cancel()
                if not starting.done():
                    starting.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await starting
                    self._event("Killed", "Task successfully killed")
                    self._set("dead", failed=False)
                    return
                handle = starting.result()
            except StartError as exc:
                self._event("Driver Failure", exc.message, DriverError=exc.message)
                if not exc.recoverable:
                    self._set("dead", failed=True)
                    self.ar.sibling_failed(self.name)
                    return
                if not await self._maybe_restart(None):
                    return
                continue
            self.handle = handle
            self._event("Started", "Task started by client")
            self._set("running")
            if await self._wait_exit(handle):
                return

    async def _wait_exit(self, handle: TaskHandle) -> bool:
        """Wait for exit or stop. True when the task is finished for good."""
        exit_wait = asyncio.ensure_future(handle.wait())
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({exit_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not exit_wait.done():
            kill_timeout = (self.task.get("KillTimeout") or 5 * S) / S
            if self._sibling:
                self._event("Sibling Task Failed", f"Task's sibling \"{self._sibling}\" failed",
                            FailedSibling=self._sibling)
            self._event("Killing",
                        f"Sent interrupt. Waiting {format_go_duration(int(kill_timeout * S))} "
                        f"before force killing", KillTimeout=int(kill_timeout * S))
            self.ar.publish()
            await handle.stop(kill_timeout)
            exit_wait.cancel()
            self._event("Killed", "Task successfully killed")
            self._set("dead", failed=False)
            return True
        result = exit_wait.result()
        if self._stop.is_set():
            self._event("Killed", "Task successfully killed")
            self._set("dead", failed=False)
            return True
        return not await self._maybe_restart(result)

    def _terminated(self, result: ExitResult) -> None:
        if result.oom_killed:
            msg = f"Exit Code: {result.exit_code}, Exit Message: \"OOM Killed\""
            self._event("Terminated", msg, ExitCode=result.exit_code, Signal=result.signal,
                        OOMKilled="true")
        else:
            msg = f"Exit Code: {result.exit_code}"
            if result.signal:
                msg += f", Signal: {result.signal}"
            if result.err:
                msg += f", Exit Message: {result.err!r}"
            self._event("Terminated", msg, ExitCode=result.exit_code, Signal=result.signal)

    async def _maybe_restart(self, result: ExitResult | None) -> bool:
        """Apply the restart policy. True if the task will run again."""
        if result is not None:
            self._terminated(result)
            batch = (self.ar.alloc["Job"].get("Type") in ("batch", "sysbatch"))
            if batch and result.exit_code == 0 and not result.signal:
                self._set("dead", failed=False)
                return False
        restart, delay, reason = self.restarts.decide()
        if not restart:
            self._event("Not Restarting", reason, FailsTask=True, RestartReason=reason)
            self._set("dead", failed=True)
            self.ar.sibling_failed(self.name)
            return False
        self._event("Restarting", f"Task restarting in {format_go_duration(int(delay * S))}",
                    RestartReason=reason, StartDelay=int(delay * S))
        self._set("pending")
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
            self._set("dead", failed=False)
            return False
        except TimeoutError:
            pass
        st = self.state
        st["Restarts"] += 1
        st["LastRestart"] = rfc3339()
        return True

    def _runtime_event(self, etype: str, message: str, extra: dict[str, Any]) -> None:
        self._event(etype, message, **extra)
        self.ar.publish()


def nomad_env(alloc: dict[str, Any], task: dict[str, Any],
              ports: list[PortMapping]) -> dict[str, str]:
    """The NOMAD_* variables a task sees (the subset apps use)."""
    env = {
        "NOMAD_ALLOC_ID": alloc["ID"], "NOMAD_ALLOC_NAME": alloc["Name"],
        "NOMAD_ALLOC_INDEX": alloc["Name"].rsplit("[", 1)[-1].rstrip("]"),
        "NOMAD_JOB_ID": alloc["JobID"], "NOMAD_JOB_NAME": alloc["Job"]["Name"],
        "NOMAD_GROUP_NAME": alloc["TaskGroup"], "NOMAD_TASK_NAME": task["Name"],
        "NOMAD_NAMESPACE": alloc["Namespace"], "NOMAD_REGION": "global", "NOMAD_DC": "dc1",
        "NOMAD_SECRETS_DIR": "/secrets", "NOMAD_TASK_DIR": "/local", "NOMAD_ALLOC_DIR": "/alloc",
    }
    for p in ports:
        inner = p.to or p.host_port
        env[f"NOMAD_PORT_{p.label}"] = str(inner)
        env[f"NOMAD_HOST_PORT_{p.label}"] = str(p.host_port)
        env[f"NOMAD_ADDR_{p.label}"] = f"127.0.0.1:{p.host_port}"
        env[f"NOMAD_IP_{p.label}"] = "127.0.0.1"
    return env


ChangeListener = Callable[[str | None], None]
