"""One supervised background process of the devstack: start, wait until healthy, status, stop.

A `Component` owns three files under the stack home: its log (`logs/NAME.log`), its pid file
(`run/NAME.pid`) and its state directory (`NAME/`). It starts its process detached (its own
session), so `shaman dev up` can exit and leave it running; a later `up`, `status` or `down`
finds it again through the pid file. The pid file holds the pid *and* the process start time,
so a recycled pid is never mistaken for the component.

This module is not a process manager: it does not restart crashed processes, rotate logs or
run anything as a service of the OS. Subclasses only say how to configure, launch and probe
their process; the lifecycle lives here once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_TAIL_LINES = 15


class ComponentError(RuntimeError):
    """A component could not be started, made healthy or stopped.

    The message always names the component and, when it has one, its log file, because the
    person reading it has to know where to look next.
    """

    def __init__(self, component: str, problem: str, log_path: Path | None = None) -> None:
        self.component = component
        self.problem = problem
        self.log_path = log_path
        where = f" (log: {log_path})" if log_path is not None else ""
        super().__init__(f"{component}: {problem}{where}")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    port: int
    healthy: bool
    log_path: Path
    state: str  # "running", "stopped", "external" (not ours to manage)
    detail: str = ""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode() or "null")


def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout_s: float = 2.0,
) -> HttpResponse | None:
    """One HTTP request; None when nothing answers (refused, reset, timed out).

    Probes use the standard library so that the devstack's health checks depend on nothing
    that could itself be broken in a half-installed environment.
    """
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return HttpResponse(response.status, response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, error.read())
    except (OSError, urllib.error.URLError):
        return None


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port right now.

    SO_REUSEADDR mirrors what the servers themselves do, so a port held only by TIME_WAIT
    connections of a previous run does not count as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of a live, non-zombie process (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _reap_if_child(pid: int) -> None:
    """Collect the exit status if `pid` is our own dead child, so it stops being a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Component(ABC):
    """A background process with a port, a health probe, a log and a pid file."""

    #: Seconds `start` waits for the component to become healthy.
    start_timeout_s: float = 30.0
    #: Seconds `stop` waits after SIGTERM before it sends SIGKILL.
    stop_timeout_s: float = 10.0

    def __init__(self, name: str, home: Path, port: int, host: str = "127.0.0.1") -> None:
        self.name = name
        self.home = home
        self.port = port
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None
        #: What converge() last found missing; named in the timeout message.
        self.waiting_for = ""
        self._adopted = False  # launch() found our process already running

    # -- what subclasses say -------------------------------------------------------------

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the component in the foreground."""

    @abstractmethod
    def probe(self) -> bool:
        """Healthy right now? Cheap, side-effect free, never raises for a down server."""

    def prepare(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Write config files and create directories before a start."""

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def converge(self) -> bool:
        """Called repeatedly while waiting: do what the running process needs, say if healthy.

        Most components only need probing; OpenBao overrides this to initialise, unseal and
        mount its KV engine.
        """
        return self.probe()

    def extra_ports(self) -> Sequence[int]:
        """Other ports the process listens on (checked for conflicts before a start)."""
        return ()

    def preflight(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Raise ComponentError when the component cannot start at all (binary missing...)."""

    # -- files ---------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.home / self.name

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    def error(self, problem: str, with_tail: bool = False) -> ComponentError:
        if with_tail:
            last = tail(self.log_path)
            if last:
                problem = f"{problem}\n--- last lines of the log ---\n{last}"
        return ComponentError(self.name, problem, self.log_path)

    # -- lifecycle -----------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid_text, started = self.pid_path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if self._proc is None:
            _reap_if_child(pid)
        elif self._proc.poll() is not None:
            self._forget()
            return None
        if _process_start_time(pid) != started:
            self._forget()
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> str:
        """Start unless already running and healthy; return "started" or "already running".

        Raises ComponentError naming the component and its log when the process cannot start,
        exits early or is not healthy within `start_timeout_s`.
        """
        outcome = self.launch()
        self.wait_healthy()
        return outcome

    def launch(self) -> str:
        """Spawn the process unless ours is running; do not wait for health.

        Split from `start` so that a supervisor can launch independent components together
        and then wait for each. Never restarts a running process, healthy or not: a second
        `up` must leave a working stack alone, and a process that is still starting (or
        needs unsealing) only needs waiting for.
        """
        if self.is_running():
            self._adopted = True
            return "already running"
        self._adopted = False
        try:
            self.preflight()
            for port in (self.port, *self.extra_ports()):
                if not port_is_free(self.host, port):
                    raise self.error(
                        f"port {self.host}:{port} is already in use by another process (find "
                        f"it with: ss -ltnp 'sport = :{port}'); stop it or choose another port"
                    )
        except ComponentError as error:
            # The log is where the message points people, so the reason must be in it too.
            self._log_line(f"not started: {error.problem}")
            raise
        self.prepare()
        self._spawn()
        return "started"

    def _log_line(self, text: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} shaman devstack: {text}\n")

    def _spawn(self) -> None:
        for directory in (self.state_dir, self.log_path.parent, self.pid_path.parent):
            directory.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"\n=== {stamp} shaman devstack starts: {' '.join(command)}\n".encode())
            log.flush()
            try:
                # A session of its own: the process survives the `shaman dev up` that
                # started it, and `down` can signal its whole process group.
                self._proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    cwd=self.state_dir,
                    start_new_session=True,
                )
            except OSError as error:
                raise self.error(f"cannot run {command[0]}: {error}") from error
        started = _process_start_time(self._proc.pid)
        self.pid_path.write_text(f"{self._proc.pid} {started}\n")

    def _exit_code(self) -> int | None:
        """The exit code when our process has died, else None."""
        if self._proc is not None:
            return self._proc.poll()
        return None if self.is_running() else -1

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        delay = 0.05
        while True:
            code = self._exit_code()
            if code is not None:
                self._forget()
                how = f"exited with code {code}" if code >= 0 else "is no longer running"
                raise self.error(f"{how} before it became healthy", with_tail=True)
            if self.converge():
                return
            if time.monotonic() >= deadline:
                waited = timeout_s or self.start_timeout_s
                why = f" (waiting for {self.waiting_for})" if self.waiting_for else ""
                if self._adopted:
                    # `up` never restarts a running process; say how to get a fresh one.
                    why += f"; it was already running as pid {self.pid()}: `shaman dev down` "
                    why += "and `up` again restart it"
                raise self.error(f"not healthy after {waited:.0f}s{why}", with_tail=True)
            # Polling a local process: a short, growing interval keeps a fast start fast
            # without spinning on a slow one.
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, timeout_s: float | None = None) -> bool:
        """SIGTERM the process, SIGKILL its process group after the deadline.

        Only the main process gets SIGTERM: a service shutting down gracefully finishes its
        in-flight work (a build, a container it supervises), which its children must survive.
        SIGKILL goes to the whole group so that nothing is orphaned. True if one was running.
        """
        pid = self.pid()
        if pid is None:
            self._forget()
            return False
        timeout = self.stop_timeout_s if timeout_s is None else timeout_s
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            self._signal_group(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 5.0):
                raise self.error(f"pid {pid} survived SIGKILL")
        self._forget()
        return True

    def _signal_group(self, pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc is not None:
                gone = self._proc.poll() is not None
            else:
                _reap_if_child(pid)
                gone = _process_start_time(pid) is None
            if gone:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _forget(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def status(self) -> ComponentStatus:
        pid = self.pid()
        healthy = pid is not None and self.probe()
        return ComponentStatus(
            name=self.name,
            pid=pid,
            port=self.port,
            healthy=healthy,
            log_path=self.log_path,
            state="running" if pid is not None else "stopped",
        )

    # -- helpers for subclasses -----------------------------------------------------------

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def http_ok(self, path: str, port: int | None = None, timeout_s: float = 2.0) -> bool:
        url = f"http://{self.host}:{port or self.port}{path}"
        response = http_request(url, timeout_s=timeout_s)
        return response is not None and response.status == 200
