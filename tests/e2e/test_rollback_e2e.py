"""Issue 6 on the whole stack: bad releases are failed, explained and rolled back once.

Every case runs the real processes (api, builder, scheduler, watcher, nats-server, OpenBao,
the registry, localnomad) and talks to them only from outside: the HTTP API with the admin
token, NATS as the devstack's `admin` user (reading SHAMAN_EVENTS in full), Nomad's HTTP
API, localnomad's test-only control surface and the stack's pid files. No test plays a
service.

- `TestSimulated` (one whole stack for the class, localnomad's simulated runtime, faults
  from `/_localnomad/behaviors` keyed by job + job version): a task exiting 1, a failing
  HTTP check, a progress-deadline stall, an app with `auto_rollback` off, the watcher
  SIGKILLed mid-rollout, the watcher dying right after it wrote an outcome (its own
  `SHAMAN_CRASHPOINT`), and event streams cut with Nomad's event buffer dropped.
- `test_podman_crash_is_rolled_back_and_v1_serves_again` (the session `shaman_stack`,
  real containers): an image whose process exits 1 after a good v1; v1's page is served
  again from the address in `/v1/service/<app>`.

Rollbacks are counted twice, from the timeline and from Nomad's job versions, and the
counts must hold for a while after the outcome (relists run every second here).

The time from the bad release's first crash (its first `Terminated` task event in Nomad;
for a failing check or a stall, its first `Alloc Unhealthy`) to the previous release
running healthy (simulated) or serving HTTP 200 (podman) is printed and written to
test-artifacts/rollback/figures.json (gitignored), never asserted.

The simulated apps run 2 instances with `max_parallel` 2 and the watcher keeps its default
`fail_fast_restarts` (2): both new allocations failing once is the "same task failed twice"
evidence, without waiting out Nomad's 15 s restart delay. The podman app is the common
shape (1 instance), so its figure includes that delay.

Not here: the watcher's unit and single-service integration tests (tests/unit/watcher,
tests/integration/watcher), benchmarks (bench/).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import pytest

from devstack.components.base import Component
from devstack.components.service import SERVICES, ShamanService
from devstack.images import build, push
from devstack.ports import free_port
from devstack.service_env import service_env
from devstack.stack import ALL_COMPONENTS, Stack, StackConfig
from shared import subjects
from tests.chaos.images import push_image

if TYPE_CHECKING:
    from tests.conftest import ShamanStack

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
FIGURES = REPO / "test-artifacts" / "rollback" / "figures.json"

#: Watcher settings of the simulated stack: relists every second (so "exactly once" is
#: checked across many of them), a quick republish of a lost rollback command, a short
#: reconnect backoff. Everything else is the watcher's default.
WATCHER_ENV = {
    "SHAMAN_RELIST_INTERVAL_S": "1",
    "SHAMAN_ROLLBACK_REPUBLISH_AFTER_S": "2",
    "SHAMAN_STREAM_BACKOFF_MAX_S": "1",
    "SHAMAN_CHECKPOINT_INTERVAL_S": "0.2",
}

#: Small Nomad timings, valid for Nomad: min_healthy < healthy_deadline < progress_deadline,
#: check interval ≥ 1 s.
ROLLOUT = {"min_healthy_time_s": 0.5, "healthy_deadline_s": 3.0, "progress_deadline_s": 5.0}
HEALTH = {"path": "/health", "interval_s": 1.0, "timeout_s": 1.0}
TERMINAL = ("healthy", "failed", "rolled_back", "superseded", "cancelled")
HOLD_S = 2.0  # how long "exactly once" must keep holding after the outcome

_figures: dict[str, dict[str, Any]] = {}


# -- waiting ----------------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, poll_s: float = 0.05) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last={last!r}")
        time.sleep(poll_s)  # the polling interval of the condition above


def stays(what: str, check: Callable[[], Any], duration_s: float, poll_s: float = 0.25) -> None:
    """Assert that `check` holds for the whole of `duration_s`."""
    deadline = time.monotonic() + duration_s
    while True:
        assert check(), f"no longer true: {what}"
        if time.monotonic() > deadline:
            return
        time.sleep(poll_s)  # the polling interval of the condition above


# -- time ---------------------------------------------------------------------------------------

_FRACTION = re.compile(r"\.(\d+)")


def epoch_s(stamp: str) -> float:
    """RFC 3339 (events: micro-, Nomad: nanoseconds) → seconds since the epoch."""
    stamp = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), stamp, count=1)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- talking to a stack ---------------------------------------------------------------------------


def http_json(url: str, method: str = "GET", body: Any = None,
              headers: dict[str, str] | None = None, timeout_s: float = 15.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


@dataclass
class Client:
    """The outside view of one whole stack: its API, NATS, Nomad, logs."""

    config: StackConfig

    @property
    def home(self) -> Path:
        return self.config.home

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http_json(f"{self.config.api_url}{path}", method, body,
                         {"Authorization": f"Bearer {self.config.admin_token()}"})

    def nomad(self, path: str) -> Any:
        status, body = http_json(f"{self.config.nomad_addr}{path}", timeout_s=10)
        assert status == 200, (path, status, body)
        return body

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, answer = http_json(f"{self.config.nomad_addr}/_localnomad/{path}", method,
                                   body if method != "GET" else None)
        assert status == 200, (path, status, answer)
        return answer

    # -- records through the API

    def deploy(self, app: str, deploy_id: str) -> dict[str, Any]:
        status, record = self.api("GET", f"/v1/apps/{app}/deploys/{deploy_id}")
        assert status == 200, record
        return dict(record)

    def maybe_deploy(self, app: str, deploy_id: str) -> dict[str, Any] | None:
        status, record = self.api("GET", f"/v1/apps/{app}/deploys/{deploy_id}")
        return dict(record) if status == 200 else None

    def deploys(self, app: str) -> list[dict[str, Any]]:
        status, body = self.api("GET", f"/v1/apps/{app}/deploys?limit=500")
        assert status == 200, body
        return list(body["deploys"])

    def releases(self, app: str) -> list[dict[str, Any]]:
        status, body = self.api("GET", f"/v1/apps/{app}/releases")
        assert status == 200, body
        return list(body["releases"])

    def app(self, app: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/v1/apps/{app}")
        assert status == 200, body
        return dict(body)

    def wait_deploy(self, app: str, deploy_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until the deploy has its final outcome and return it."""

        def reached() -> dict[str, Any] | None:
            record = self.maybe_deploy(app, deploy_id)
            return record if record is not None and settled(record) else None

        try:
            return dict(wait_for(f"deploy {deploy_id} to settle", reached, timeout_s,
                                 poll_s=0.1))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.evidence(app, deploy_id)}") from None

    def start_deploy(self, app: str, image: str) -> str:
        status, accepted = self.api("POST", f"/v1/apps/{app}/deploys", {"image": image})
        assert status == 202, accepted
        return str(accepted["id"])

    # -- Nomad

    def job(self, app: str) -> dict[str, Any]:
        return dict(self.nomad(f"/v1/job/{app}"))

    def job_versions(self, app: str) -> list[dict[str, Any]]:
        return list(self.nomad(f"/v1/job/{app}/versions")["Versions"])

    def allocations(self, app: str) -> list[dict[str, Any]]:
        return list(self.nomad(f"/v1/job/{app}/allocations?all=true"))

    # -- the timeline

    def timeline(self, app: str) -> list[dict[str, Any]]:
        """Every event of `app` in SHAMAN_EVENTS, oldest first, read to the end."""
        return asyncio.run(self._timeline(app))

    async def _timeline(self, app: str) -> list[dict[str, Any]]:
        nc = await nats.connect(self.config.nats_url, user="admin",
                                password=self.config.nats_password("admin"))
        try:
            js = nc.jetstream()
            sub = await js.subscribe(subjects.app_events_filter(app), ordered_consumer=True)
            events: list[dict[str, Any]] = []
            try:
                while True:
                    try:
                        msg = await sub.next_msg(timeout=3.0)
                    except nats.errors.TimeoutError:
                        break  # only when the app has no events at all
                    events.append(json.loads(msg.data))
                    if msg.metadata.num_pending == 0:
                        break
            finally:
                await sub.unsubscribe()
            return events
        finally:
            await nc.close()

    def evidence(self, app: str, deploy_id: str) -> str:
        """What to look at when a wait fails: the records, the timeline, Nomad, log tails."""
        parts = [f"--- stack home: {self.home}"]
        for what, read in (
            ("deploys", lambda: self.deploys(app)),
            ("timeline", lambda: [(e["type"], e["deploy_id"], e.get("reason") or e.get("status"))
                                  for e in self.timeline(app)]),
            ("nomad deployments", lambda: [(d["JobVersion"], d["Status"], d["StatusDescription"])
                                           for d in self.nomad(f"/v1/job/{app}/deployments")]),
        ):
            try:
                parts.append(f"--- {what}: {json.dumps(read(), default=str)[:6000]}")
            except Exception as exc:  # evidence must not hide the real failure
                parts.append(f"--- {what}: unavailable ({exc!r})")
        for name in ("watcher", "scheduler"):
            log = self.home / "logs" / f"{name}.log"
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if app in line][-25:] if log.exists() else []
            parts.append(f"--- {log} (lines naming {app}):\n" + "\n".join(lines))
        return "\n".join(parts)


def settled(record: dict[str, Any]) -> bool:
    """Whether a deploy has its final outcome: a `failed` deploy whose automatic rollback
    is still running becomes `rolled_back` (or stays `failed`) only when that ends."""
    if record["status"] == "failed":
        return record["rollback"] is None or record["rollback"]["outcome"] is not None
    return record["status"] in TERMINAL


class _EnvStack(Stack):
    """The devstack's Stack, whose services get extra settings on top of the contract env."""

    def __init__(self, config: StackConfig, extra_env: dict[str, dict[str, str]]) -> None:
        super().__init__(config)
        self.extra_env = extra_env

    def _make(self, name: str) -> Component:
        if name in SERVICES:
            return ShamanService(name, self.config.home,
                                 {**service_env(self.config, name), **self.extra_env[name]})
        return super()._make(name)


@dataclass
class SimStack(Client):
    stack: _EnvStack = field(init=False)
    extra_env: dict[str, dict[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.extra_env = {name: {} for name in SERVICES}
        self.extra_env["watcher"].update(WATCHER_ENV)
        self.stack = _EnvStack(self.config, self.extra_env)

    def kill(self, service: str) -> None:
        """SIGKILL the service's process group (found through its pid file): a crash."""
        component = self.stack.component(service)
        pid = component.pid()
        assert pid is not None, f"{service} is not running"
        os.killpg(pid, signal.SIGKILL)
        wait_for(f"{service} to be gone", lambda: not component.is_running(), 10)

    def start(self, service: str, **env: str) -> None:
        """Start a stopped service and wait until it is healthy; `env` only for this start.

        It gets a new HTTP port: the stack's ports are free ports from the ephemeral range,
        so while the service was down any outgoing connection on this machine may have
        taken its old one as a local port (seen: "port ... is already in use").
        """
        self.extra_env[service]["SHAMAN_HTTP_ADDR"] = f"{self.config.host}:{free_port()}"
        base = dict(self.extra_env[service])
        self.extra_env[service].update(env)
        try:
            self.stack._components.pop(service, None)  # rebuilt with the env above
            self.stack.component(service).start()
        finally:
            self.extra_env[service].clear()
            self.extra_env[service].update(base)

    def watcher_metric(self, name: str) -> float:
        url = f"{self.stack.component('watcher').http_base}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"metric {name} is not exposed by the watcher")


# -- apps and releases ----------------------------------------------------------------------


@dataclass(frozen=True)
class GoodV1:
    app: str
    deploy_id: str
    release: int
    image: str  # repo@sha256:…, what Nomad runs
    job_version: int


def unique_app(case: str) -> str:
    return f"rb-{case}-{uuid.uuid4().hex[:6]}"


def create_app(client: Client, app: str, *, instances: int, auto_rollback: bool = True,
               rollout: dict[str, float] | None = None) -> None:
    status, body = client.api("POST", "/v1/apps", {
        "name": app, "port": 8080, "instances": instances, "auto_rollback": auto_rollback,
        "health": HEALTH,
        "rollout": {"max_parallel": instances, **(rollout or ROLLOUT)},
    })
    assert status == 201, body


def good_v1(client: Client, app: str, image_ref: str, *, timeout_s: float = 60.0) -> GoodV1:
    deploy_id = client.start_deploy(app, image_ref)
    record = client.wait_deploy(app, deploy_id, timeout_s)
    assert record["status"] == "healthy", client.evidence(app, deploy_id)
    job = client.job(app)
    assert job["Meta"]["shaman_deploy_id"] == deploy_id
    image = job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]
    [release] = [r for r in client.releases(app) if r["version"] == record["release"]]
    assert release["image"] == image
    return GoodV1(app, deploy_id, record["release"], image, job["Version"])


def sim_image(stack: SimStack, app: str, tag: str) -> str:
    """A tiny image pushed into the stack's registry (the simulated runtime never runs it,
    but the builder resolves its digest and the scheduler checks a rollback target's)."""
    push_image(stack.config.registry, app, tag, f"{app} {tag} {uuid.uuid4().hex}")
    return f"{stack.config.registry}/{app}:{tag}"


def behave(stack: SimStack, app: str, job_version: int, **effects: Any) -> None:
    """Give the tasks of one Nomad job version of `app` a behaviour (simulated runtime)."""
    stack.control("POST", "behaviors", {"job": app, "job_version": job_version, **effects})


def bad_release(stack: SimStack, v1: GoodV1, **effects: Any) -> tuple[str, int]:
    """Deploy a new image whose job version behaves badly; (deploy id, its job version)."""
    bad_version = stack.job(v1.app)["Version"] + 1
    behave(stack, v1.app, bad_version, **effects)
    return stack.start_deploy(v1.app, sim_image(stack, v1.app, "bad")), bad_version


# -- what must hold after a bad release ---------------------------------------------------------


def of(events: list[dict[str, Any]], type_: str, deploy_id: str | None = None
       ) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_
            and (deploy_id is None or e["deploy_id"] == deploy_id)]


def wait_for_event(client: Client, app: str, type_: str, deploy_id: str,
                   timeout_s: float = 10.0) -> dict[str, Any]:
    def published() -> dict[str, Any] | None:
        found = of(client.timeline(app), type_, deploy_id)
        return found[0] if found else None

    return dict(wait_for(f"{type_} of {deploy_id} on the timeline", published, timeout_s,
                         poll_s=0.1))


def rollback_counts(client: Client, app: str, bad_id: str) -> dict[str, int]:
    """Rollbacks of `bad_id`, counted on the timeline, in the records and in Nomad."""
    events = client.timeline(app)
    rollback_id = f"{bad_id}-rollback"
    versions = client.job_versions(app)
    return {
        "rollback.started": len(of(events, "rollback.started")),
        "rollback.succeeded": len(of(events, "rollback.succeeded")),
        "rollback.failed": len(of(events, "rollback.failed")),
        "rollout.failed(bad)": len(of(events, "rollout.failed", bad_id)),
        "deploy.finished(bad)": len(of(events, "deploy.finished", bad_id)),
        "release.created(rollback)": len(of(events, "release.created", rollback_id)),
        "rollback deploys": sum(1 for d in client.deploys(app) if d["rollback_for"] == bad_id
                                or d["automatic"]),
        "rollback releases": sum(1 for r in client.releases(app) if r["kind"] == "rollback"),
        "nomad versions(rollback)": sum(
            1 for v in versions if (v.get("Meta") or {}).get("shaman_deploy_id") == rollback_id),
    }


ONE_ROLLBACK = {
    "rollback.started": 1, "rollback.succeeded": 1, "rollback.failed": 0,
    "rollout.failed(bad)": 1, "deploy.finished(bad)": 1, "release.created(rollback)": 1,
    "rollback deploys": 1, "rollback releases": 1, "nomad versions(rollback)": 1,
}
NO_ROLLBACK = {
    "rollback.started": 0, "rollback.succeeded": 0, "rollback.failed": 0,
    "rollout.failed(bad)": 1, "deploy.finished(bad)": 1, "release.created(rollback)": 0,
    "rollback deploys": 0, "rollback releases": 0, "nomad versions(rollback)": 0,
}


def assert_rolled_back_once(client: Client, v1: GoodV1, bad_id: str, *,
                            instances: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """The bad deploy ended `rolled_back` through exactly one automatic rollback to v1's
    content, which runs healthy in Nomad; it stays that way. Returns the bad deploy."""
    app = v1.app
    bad = client.wait_deploy(app, bad_id, timeout_s)
    assert bad["status"] == "rolled_back", client.evidence(app, bad_id)
    # The record is written first, then published (the watcher's outbox).
    wait_for_event(client, app, "deploy.finished", bad_id)
    rollback_id = f"{bad_id}-rollback"
    history = [h["status"] for h in bad["history"]]
    assert history.index("failed") < history.index("rolled_back"), history
    assert bad["rollback"]["deploy_id"] == rollback_id, bad["rollback"]
    assert bad["rollback"]["to_release"] == v1.release, bad["rollback"]
    assert bad["rollback"]["outcome"] == "succeeded", bad["rollback"]

    rollback = client.deploy(app, rollback_id)
    assert rollback["status"] == "healthy", rollback
    assert rollback["automatic"] is True and rollback["rollback_for"] == bad_id, rollback
    assert rollback["kind"] == "rollback", rollback
    [restored] = [r for r in client.releases(app) if r["version"] == rollback["release"]]
    assert restored["rollback_of"] == v1.release and restored["image"] == v1.image, restored

    # Nomad: the job's current version is the rollback, running v1's image digest, healthy.
    job = client.job(app)
    assert job["Meta"]["shaman_deploy_id"] == rollback_id, job["Meta"]
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == v1.image
    assert job["Version"] == max(v["Version"] for v in client.job_versions(app))

    def running_healthy() -> list[dict[str, Any]] | None:
        current = [a for a in client.allocations(app) if a["JobVersion"] == job["Version"]
                   and a["ClientStatus"] == "running" and a["DesiredStatus"] == "run"
                   and (a.get("DeploymentStatus") or {}).get("Healthy") is True]
        return current if len(current) == instances else None

    wait_for(f"{instances} healthy allocation(s) of the rollback", running_healthy, 10)

    # The timeline tells the same story, once.
    events = client.timeline(app)
    [finished] = of(events, "deploy.finished", bad_id)
    assert finished["status"] == "rolled_back", finished
    [started] = of(events, "rollback.started", bad_id)
    assert started["automatic"] is True and started["to_release"] == v1.release, started
    [succeeded] = of(events, "rollback.succeeded", bad_id)
    assert succeeded["to_release"] == v1.release, succeeded
    assert succeeded["new_release"] == rollback["release"], succeeded
    [rollback_finished] = of(events, "deploy.finished", rollback_id)
    assert rollback_finished["status"] == "healthy", rollback_finished
    # In the documented order (docs/events.md, "A deploy's life on the timeline").
    story = [e["type"] for e in events if e["deploy_id"] == bad_id and e["type"] in (
        "rollout.failed", "rollback.started", "rollback.succeeded", "deploy.finished")]
    assert story == ["rollout.failed", "rollback.started", "rollback.succeeded",
                     "deploy.finished"], story

    def exactly_once() -> bool:
        counts = rollback_counts(client, app, bad_id)
        assert counts == ONE_ROLLBACK, counts
        return True

    stays("exactly one outcome and one rollback (timeline, records, Nomad versions)",
          exactly_once, HOLD_S)
    assert client.job(app)["Version"] == job["Version"], "a job version after the rollback"
    return bad


def record_figures(client: Client, case: str, v1: GoodV1, bad_id: str,
                   bad_version: int) -> tuple[dict[str, float | None], float]:
    """Print (and keep) how fast the previous release ran again after the first crash;
    returns the figures and their origin (epoch seconds)."""
    app = v1.app
    allocs = client.allocations(app)
    bad_allocs = [a for a in allocs if a["JobVersion"] == bad_version]
    crashes = [ev["Time"] / 1e9 for a in bad_allocs for state in (a["TaskStates"] or {}).values()
               for ev in state.get("Events") or [] if ev["Type"] == "Terminated"
               and not any(e["Type"] == "Killing" for e in state["Events"]
                           if e["Time"] <= ev["Time"])]
    # Without a crash (a failing check, a stall) the bad release shows first as unhealthy.
    unhealthy = [ev["Time"] / 1e9 for a in bad_allocs
                 for state in (a["TaskStates"] or {}).values()
                 for ev in state.get("Events") or [] if ev["Type"] == "Alloc Unhealthy"]
    job_version = client.job(app)["Version"]
    restored = [a for a in allocs if a["JobVersion"] == job_version]
    started = [ev["Time"] / 1e9 for a in restored for state in (a["TaskStates"] or {}).values()
               for ev in state.get("Events") or [] if ev["Type"] == "Started"]
    healthy = [epoch_s(a["DeploymentStatus"]["Timestamp"]) for a in restored
               if (a.get("DeploymentStatus") or {}).get("Healthy") is True]
    events = client.timeline(app)

    def event_time(type_: str, deploy_id: str) -> float | None:
        found = of(events, type_, deploy_id)
        return epoch_s(found[0]["time"]) if found else None

    failed_at = event_time("rollout.failed", bad_id)
    origin = min(crashes or unhealthy or [failed_at or 0.0])
    assert origin > 0

    def since(t: float | None) -> float | None:
        return None if t is None else round(t - origin, 3)

    figure: dict[str, Any] = {
        "origin": ("first Terminated" if crashes else "first Alloc Unhealthy" if unhealthy
                   else "rollout.failed"),
        # With one instance, the fail-fast evidence (2 failures) is complete only here.
        "second_crash_s": since(sorted(crashes)[1] if len(crashes) > 1 else None),
        "rollout.failed_s": since(failed_at),
        "rollback.started_s": since(event_time("rollback.started", bad_id)),
        "previous_running_s": since(min(started) if started else None),
        "previous_healthy_s": since(min(healthy) if healthy else None),
        "rolled_back_s": since(event_time("rollback.succeeded", bad_id)),
    }
    _figures[case] = figure
    print(f"\n[rollback e2e] {case}: from the bad release's {figure['origin']}: "
          + ", ".join(f"{k}={v}" for k, v in figure.items() if k != "origin"))
    return figure, origin


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if not _figures:
        return
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(_figures, indent=2) + "\n")
    print(f"\n[rollback e2e] figures (seconds after the first crash), also in {FIGURES}:")
    for case, figure in _figures.items():
        print(f"  {case:<28} " + "  ".join(f"{k}={v}" for k, v in figure.items()))


# -- the simulated runtime -------------------------------------------------------------------------


@pytest.fixture(scope="class")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimStack]:
    """A whole stack of this class's own: simulated localnomad, the four services."""
    config = StackConfig.for_tests(
        tmp_path_factory.mktemp("rollback-home"), components=ALL_COMPONENTS,
        runtime="simulated", openbao_mode="dev", seed_images=False,
    )
    stack = SimStack(config)
    try:
        stack.stack.up_or_raise()
        yield stack
    finally:
        try:
            stack.stack.down(timeout_s=5)
        finally:
            base = config.storage.base
            if base.name.startswith("shaman-containers-"):  # ours, named after our home
                shutil.rmtree(base, ignore_errors=True)


class TestSimulated:
    INSTANCES = 2

    def v1(self, sim: SimStack, case: str, *, auto_rollback: bool = True,
           instances: int = INSTANCES) -> GoodV1:
        app = unique_app(case)
        create_app(sim, app, instances=instances, auto_rollback=auto_rollback)
        return good_v1(sim, app, sim_image(sim, app, "v1"))

    def test_a_task_exiting_1_is_failed_early_and_rolled_back_once(self, sim: SimStack) -> None:
        v1 = self.v1(sim, "exit")
        bad_id, bad_version = bad_release(sim, v1, crash_on_start=1)
        bad = assert_rolled_back_once(sim, v1, bad_id, instances=self.INSTANCES)

        assert "exited with code 1" in bad["reason"], bad["reason"]
        assert "failed early by Shaman" in bad["reason"], bad["reason"]
        [failed] = of(sim.timeline(v1.app), "rollout.failed", bad_id)
        assert "exited with code 1" in failed["reason"], failed
        assert failed["allocations"], failed
        assert {a["exit_code"] for a in failed["allocations"]} == {1}, failed["allocations"]
        assert any("Exit Code: 1" in line for a in failed["allocations"]
                   for line in a["task_events"]), failed["allocations"]
        # Failed by the watcher through Nomad's API, before any Nomad deadline.
        [nomad_dep] = [d for d in sim.nomad(f"/v1/job/{v1.app}/deployments")
                       if d["JobVersion"] == bad_version]
        assert nomad_dep["Status"] == "failed", nomad_dep
        assert nomad_dep["StatusDescription"].startswith("Deployment marked as failed"), nomad_dep
        record_figures(sim, "simulated: exit 1", v1, bad_id, bad_version)

    def test_a_failing_http_check_is_rolled_back_with_its_output(self, sim: SimStack) -> None:
        v1 = self.v1(sim, "check")
        bad_id, bad_version = bad_release(sim, v1, checks="failing")
        bad = assert_rolled_back_once(sim, v1, bad_id, instances=self.INSTANCES)

        assert "simulated check failing" in bad["reason"], bad["reason"]
        [failed] = of(sim.timeline(v1.app), "rollout.failed", bad_id)
        outputs = {a["check_output"] for a in failed["allocations"]}
        assert outputs == {"simulated check failing"}, failed["allocations"]
        assert "simulated check failing" in failed["reason"], failed
        record_figures(sim, "simulated: failing check", v1, bad_id, bad_version)

    def test_a_progress_deadline_stall_names_the_deadline(self, sim: SimStack) -> None:
        # One instance: a single allocation that never starts is not "the same task failing
        # twice", so nothing fails it early; Nomad's progress deadline (5 s) does.
        v1 = self.v1(sim, "stall", instances=1)
        bad_id, bad_version = bad_release(sim, v1, hang=True)
        bad = assert_rolled_back_once(sim, v1, bad_id, instances=1)

        # auto_rollback is on and v1 was healthy, so the platform's policy is a rollback;
        # the deploy went through `failed` (checked above) with the deadline as its reason.
        assert "deadline" in bad["reason"], bad["reason"]
        [failed] = of(sim.timeline(v1.app), "rollout.failed", bad_id)
        assert "progress deadline" in failed["reason"], failed
        [nomad_dep] = [d for d in sim.nomad(f"/v1/job/{v1.app}/deployments")
                       if d["JobVersion"] == bad_version]
        assert nomad_dep["StatusDescription"].startswith("Failed due to progress deadline")
        record_figures(sim, "simulated: stall", v1, bad_id, bad_version)

    def test_auto_rollback_off_ends_failed_and_nothing_is_rolled_back(
        self, sim: SimStack
    ) -> None:
        v1 = self.v1(sim, "off", auto_rollback=False)
        bad_id, bad_version = bad_release(sim, v1, crash_on_start=1)
        bad = sim.wait_deploy(v1.app, bad_id)
        assert bad["status"] == "failed", sim.evidence(v1.app, bad_id)
        assert bad["rollback"] is None, bad
        assert "exited with code 1" in bad["reason"], bad["reason"]
        # The record is written first, then published (the watcher's outbox).
        finished = wait_for_event(sim, v1.app, "deploy.finished", bad_id)
        assert finished["status"] == "failed", finished

        def nothing_rolled_back() -> bool:
            counts = rollback_counts(sim, v1.app, bad_id)
            assert counts == NO_ROLLBACK, counts
            job = sim.job(v1.app)
            # The job stays as Nomad left it: the failed version, no later one.
            assert job["Version"] == bad_version, job["Version"]
            assert job["Meta"]["shaman_deploy_id"] == bad_id, job["Meta"]
            assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] != v1.image
            return True

        stays("no rollback for an app with auto_rollback off", nothing_rolled_back, HOLD_S)
        assert sim.app(v1.app)["state"] == "failed"

    def test_watcher_sigkilled_mid_rollout(self, sim: SimStack) -> None:
        v1 = self.v1(sim, "kill")
        # Slow to start, then crash: the rollout runs a while, and crashes with no watcher.
        bad_id, bad_version = bad_release(sim, v1, start_delay_s=1.0, crash_on_start=1)

        def submitted() -> bool:
            return bool(of(sim.timeline(v1.app), "rollout.submitted", bad_id))

        wait_for("the bad release to be submitted to Nomad", submitted, 30)
        sim.kill("watcher")
        try:
            def crashed() -> bool:
                return sum(1 for a in sim.allocations(v1.app) if a["JobVersion"] == bad_version
                           for s in (a["TaskStates"] or {}).values()
                           for e in s.get("Events") or [] if e["Type"] == "Terminated") >= 2

            wait_for("both new allocations to crash while no watcher runs", crashed, 20)
            assert sim.deploy(v1.app, bad_id)["status"] == "deploying"
        finally:
            sim.start("watcher")
        bad = assert_rolled_back_once(sim, v1, bad_id, instances=self.INSTANCES)
        assert "exited with code 1" in bad["reason"], bad["reason"]
        record_figures(sim, "simulated: watcher killed", v1, bad_id, bad_version)

    def test_watcher_dying_right_after_the_outcome(self, sim: SimStack) -> None:
        """The worst moment: the deploy is `failed` with its rollback claimed, and the
        rollback command not yet published. The next watcher finishes the job, once."""
        v1 = self.v1(sim, "point")
        sim.kill("watcher")
        try:
            sim.start("watcher", SHAMAN_CRASHPOINT="after_outcome")
            bad_id, bad_version = bad_release(sim, v1, crash_on_start=1)
            component = sim.stack.component("watcher")
            wait_for("the watcher to exit at its crashpoint", lambda: not component.is_running(),
                     30)
            log = (sim.home / "logs" / "watcher.log").read_text(errors="replace")
            assert '"point": "after_outcome"' in log, "the watcher died elsewhere"
            bad = sim.deploy(v1.app, bad_id)
            assert bad["status"] == "failed" and bad["rollback"] is not None, bad
        finally:
            if not sim.stack.component("watcher").is_running():
                sim.start("watcher")
            else:  # never reached the point: put the normal watcher back all the same
                sim.kill("watcher")
                sim.start("watcher")
        assert_rolled_back_once(sim, v1, bad_id, instances=self.INSTANCES)
        record_figures(sim, "simulated: crashpoint", v1, bad_id, bad_version)

    def test_event_streams_cut_during_the_rollout(self, sim: SimStack) -> None:
        v1 = self.v1(sim, "cut")
        connects_before = sim.watcher_metric("shaman_watcher_stream_connects_total")
        stop = threading.Event()
        cuts = 0

        def cutter() -> None:
            # Cut every stream and drop Nomad's event buffer around the crash, so events
            # are lost for good and only relists can tell the watcher what happened.
            nonlocal cuts
            while not stop.is_set() and cuts < 12:
                sim.control("POST", "events/cut")
                sim.control("POST", "events/drop-buffer")
                cuts += 1
                stop.wait(0.25)  # the cutting rhythm, not a wait for a condition

        thread = threading.Thread(target=cutter, name="cutter", daemon=True)
        bad_id, bad_version = bad_release(sim, v1, start_delay_s=1.0, crash_on_start=1)
        thread.start()
        try:
            bad = assert_rolled_back_once(sim, v1, bad_id, instances=self.INSTANCES)
        finally:
            stop.set()
            thread.join(timeout=10)
        assert "exited with code 1" in bad["reason"], bad["reason"]
        reconnects = sim.watcher_metric("shaman_watcher_stream_connects_total") - connects_before
        assert reconnects >= 2, f"the watcher reconnected {reconnects} times after {cuts} cuts"
        record_figures(sim, "simulated: streams cut", v1, bad_id, bad_version)


# -- podman: real containers ---------------------------------------------------------------------

CRASH_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
CMD ["/bin/sh", "-c", "echo 'rollback-e2e: cannot start: DATABASE_URL is not set' >&2; exit 1"]
"""


@pytest.mark.podman
def test_podman_crash_is_rolled_back_and_v1_serves_again(
    shaman_stack: ShamanStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client = Client(shaman_stack.config)
    app = unique_app("podman")
    registry = shaman_stack.registry
    log = tmp_path_factory.mktemp("rollback-images") / "build.log"
    greeting = f"rollback e2e v1 {uuid.uuid4().hex[:8]}"
    context = tmp_path_factory.mktemp("rollback-v1")
    shutil.copytree(HELLO, context, dirs_exist_ok=True)
    containerfile = (context / "Containerfile").read_text()
    (context / "Containerfile").write_text(
        containerfile.replace('GREETING="Hello from Shaman"', f'GREETING="{greeting}"'))
    v1_ref, crash_ref = f"{registry}/{app}:v1", f"{registry}/{app}:crash"
    build(shaman_stack.storage, context, v1_ref, log, build_args={"REGISTRY": registry})
    push(shaman_stack.storage, v1_ref, log)
    crash_context = tmp_path_factory.mktemp("rollback-crash")
    (crash_context / "Containerfile").write_text(CRASH_CONTAINERFILE)
    build(shaman_stack.storage, crash_context, crash_ref, log, build_args={"BASE": v1_ref})
    push(shaman_stack.storage, crash_ref, log)

    # One instance, the common shape. The healthy deadline is longer than Nomad's 15 s
    # restart delay, so the watcher's "failed twice" evidence decides, not a Nomad deadline.
    create_app(client, app, instances=1, rollout={
        "min_healthy_time_s": 0.5, "healthy_deadline_s": 40.0, "progress_deadline_s": 60.0})
    v1 = good_v1(client, app, v1_ref, timeout_s=120)

    def serves_v1() -> bool:
        try:
            services = client.nomad(f"/v1/service/{app}")
        except (AssertionError, OSError):
            return False
        for service in services:
            url = f"http://{service['Address']}:{service['Port']}/"
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200 and greeting.encode() in response.read():
                        return True
            except OSError:
                continue
        return False

    wait_for("v1 to serve its page", serves_v1, 30)

    # Sample "is v1 served?" all through the bad rollout, to see when it serves again.
    samples: list[tuple[float, bool]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            samples.append((time.time(), serves_v1()))
            stop.wait(0.1)  # the sampling rhythm, not a wait for a condition

    thread = threading.Thread(target=sampler, name="sampler", daemon=True)
    thread.start()
    try:
        bad_version = v1.job_version + 1
        bad_id = client.start_deploy(app, crash_ref)
        bad = assert_rolled_back_once(client, v1, bad_id, instances=1, timeout_s=120)
        wait_for("v1 to serve its page again", serves_v1, 30)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert "exited with code 1" in bad["reason"], bad["reason"]
    [failed] = of(client.timeline(app), "rollout.failed", bad_id)
    assert {a["exit_code"] for a in failed["allocations"]} == {1}, failed["allocations"]
    assert any("DATABASE_URL is not set" in line for a in failed["allocations"]
               for line in a["log_tail"]), failed["allocations"]

    figure, origin = record_figures(client, "podman: exit 1", v1, bad_id, bad_version)
    # The first sample after the crash that got v1's page: the previous release serves again.
    served_again = next((t for t, ok in samples if ok and t > origin), None)
    figure["previous_serving_http_s"] = (
        None if served_again is None else round(served_again - origin, 3))
    print(f"[rollback e2e] podman: first crash → v1 serving HTTP 200 again: "
          f"{figure['previous_serving_http_s']} s (sampled every 0.1 s)")
