"""Time to restore a release that crashes on start: Shaman against Nomad's default policy.

Runs on a whole stack with localnomad's podman runtime (real containers; the one
bench/makerun_bench.py leaves running). Two images: examples/hello (serves `/health`) and
a "crasher" built FROM the same busybox whose command exits 3 at once.

- **Shaman** (each trial a fresh app): deploy hello, wait until the deploy is `healthy`;
  deploy the crasher. Restore time = from the crasher's first `Terminated` task event (its
  first crash, Nomad's own timestamp) to the first moment an allocation of a *later* job
  version (the rollback) answers `GET /health` with 200 through its Nomad service address.
- **Nomad's default policy alone** (the baseline): the same job as Shaman renders for the
  app, under another job ID and without Shaman's meta (so the watcher leaves it alone),
  with `AutoRevert: true` and Nomad's default restart and reschedule policies; registered
  straight into localnomad, hello first (until its deployment is successful, so it is the
  stable version), then the crasher; the same two timestamps. With the default
  progress deadline (10 min) this takes minutes, so it runs in a thread of its own from
  the start of the benchmark (`Baseline`), and the Shaman trials run while it waits.

Polling here is every 0.1 s (0.5 s for the baseline), against the figure's seconds.

Not here: simulated-runtime figures (bench/e2e_bench.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devstack.images import build, push, source_digest
from devstack.stack import StackConfig

CRASHER = """\
ARG REGISTRY
FROM ${REGISTRY}/library/busybox:stable
USER 65534:65534
CMD ["/bin/sh", "-c", "echo 'crashing on start'; exit 3"]
"""
FAST = {"rollout": {"min_healthy_time_s": 1.0, "healthy_deadline_s": 300.0,
                    "progress_deadline_s": 600.0},
        "health": {"path": "/health", "interval_s": 1.0, "timeout_s": 1.0}}
READ_ONLY = ("Version", "Stable", "Status", "StatusDescription", "CreateIndex", "ModifyIndex",
             "JobModifyIndex", "SubmitTime", "Stop")
MANIFEST = ("application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json")


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout_s: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def digest_of(registry: str, repo: str, tag: str) -> str:
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": MANIFEST})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers["Docker-Content-Digest"])


class Target:
    """The stack's addresses, admin token and images."""

    def __init__(self, config: StackConfig, work: Path) -> None:
        self.config = config
        self.api = config.api_url
        self.nomad = config.nomad_addr
        self.registry = config.registry
        self.token = config.admin_token()
        repo_root = Path(__file__).resolve().parents[1]
        self.hello = f"{self.registry}/hello:{source_digest(repo_root / 'examples' / 'hello')}"
        self.crasher = f"{self.registry}/crasher:1"
        context = work / "crasher"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Containerfile").write_text(CRASHER)
        log = work / "images.log"
        build(config.storage, context, self.crasher, log, build_args={"REGISTRY": self.registry})
        push(config.storage, self.crasher, log)
        self.hello_pinned = f"{self.registry}/hello@" + digest_of(
            self.registry, "hello", self.hello.rsplit(":", 1)[1])
        self.crasher_pinned = f"{self.registry}/crasher@" + digest_of(
            self.registry, "crasher", "1")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        status, data = http(method, self.api + path, body,
                            {"Authorization": f"Bearer {self.token}"})
        if (status >= 300 or status == 0) and not (status == 409 and path == "/v1/apps"):
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return data

    def nomad_call(self, method: str, path: str, body: Any = None) -> Any:
        status, data = http(method, self.nomad + path, body)
        if status >= 300 or status == 0:
            raise RuntimeError(f"nomad {method} {path}: {status} {data}")
        return data


def wait(check: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def first_crash_ns(t: Target, job: str, version: int) -> int | None:
    """Nomad's time of the first `Terminated` event of any allocation of `version`."""
    status, allocs = http("GET", f"{t.nomad}/v1/job/{job}/allocations?all=true")
    times = []
    for alloc in allocs or [] if status == 200 else []:
        if alloc.get("JobVersion") != version:
            continue
        for state in (alloc.get("TaskStates") or {}).values():
            times += [int(e["Time"]) for e in state.get("Events") or []
                      if e.get("Type") == "Terminated"]
    return min(times) if times else None


def serving_after(t: Target, job: str, service: str, version: int) -> bool:
    """An allocation of a job version after `version` answers /health with 200."""
    status, allocs = http("GET", f"{t.nomad}/v1/job/{job}/allocations")
    newer = {a["ID"] for a in allocs or [] if status == 200
             and a.get("JobVersion", -1) > version and a.get("ClientStatus") == "running"}
    if not newer:
        return False
    status, regs = http("GET", f"{t.nomad}/v1/service/{service}")
    for reg in regs or [] if status == 200 else []:
        if reg.get("AllocID") in newer:
            code, _ = http("GET", f"http://{reg['Address']}:{reg['Port']}/health", timeout_s=1)
            if code == 200:
                return True
    return False


def measure_restore(t: Target, job: str, service: str, version: int, timeout_s: float,
                    interval_s: float) -> dict[str, Any]:
    crash_ns = wait(lambda: first_crash_ns(t, job, version), timeout_s, f"{job} first crash",
                    interval_s)
    wait(lambda: serving_after(t, job, service, version), timeout_s,
         f"{job} serving the previous release again", interval_s)
    serving_ns = time.time_ns()
    return {"restore_s": round((serving_ns - crash_ns) / 1e9, 2)}


def shaman_trial(t: Target, app: str) -> dict[str, Any]:
    t.call("POST", "/v1/apps", {"name": app, "image": f"{t.registry}/hello", "port": 8080,
                                **FAST})
    first = t.call("POST", f"/v1/apps/{app}/deploys", {"image": t.hello})["id"]

    def status_of(deploy_id: str) -> str:
        return str(t.call("GET", f"/v1/apps/{app}/deploys/{deploy_id}")["status"])

    def healthy() -> bool:
        status = status_of(first)
        if status in ("failed", "rolled_back", "cancelled", "superseded"):
            raise RuntimeError(f"{app}: the good release ended {status}")
        return status == "healthy"

    wait(healthy, 180, f"{app} healthy")
    good_version = int(t.nomad_call("GET", f"/v1/job/{app}")["Version"])
    bad = t.call("POST", f"/v1/apps/{app}/deploys", {"image": t.crasher})["id"]
    result = measure_restore(t, app, app, good_version + 1, 300, 0.1)
    # `failed` comes first, `rolled_back` once the rollback deploy is healthy.
    with contextlib.suppress(TimeoutError):
        wait(lambda: status_of(bad) == "rolled_back", 120, f"{app} rolled back")
    return {**result, "outcome": status_of(bad)}


def baseline_job(t: Target, template_app: str, job_id: str, image: str) -> dict[str, Any]:
    """Shaman's rendered job for `template_app`, renamed, unmarked, AutoRevert on."""
    job = copy.deepcopy(t.nomad_call("GET", f"/v1/job/{template_app}"))
    for key in READ_ONLY:
        job.pop(key, None)
    job["ID"] = job["Name"] = job_id
    job["Meta"] = {"bench": "nomad-default"}
    for group in job["TaskGroups"]:
        group["Update"]["AutoRevert"] = True
        # Nomad's defaults, not whatever the platform rendered.
        group.pop("RestartPolicy", None)
        group.pop("ReschedulePolicy", None)
        for service in group.get("Services") or []:
            service["Name"] = job_id
            service["Tags"] = []
        for task in group["Tasks"]:
            task.pop("RestartPolicy", None)
            task["Config"]["image"] = image
            for service in task.get("Services") or []:
                service["Name"] = job_id
    return {"Job": job}


class Baseline(threading.Thread):
    """Nomad's default policy alone, in the background: `result` or `error` when done."""

    def __init__(self, t: Target, template_app: str, job_id: str, timeout_s: float) -> None:
        super().__init__(name="restore-baseline", daemon=True)
        self.t, self.template_app, self.job_id, self.timeout_s = t, template_app, job_id, timeout_s
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.started_at = time.monotonic()

    def run(self) -> None:
        try:
            t, job = self.t, self.job_id
            t.nomad_call("POST", "/v1/jobs", baseline_job(t, self.template_app, job,
                                                          t.hello_pinned))

            def stable() -> bool:
                status, dep = http("GET", f"{t.nomad}/v1/job/{job}/deployment")
                return status == 200 and bool(dep) and dep.get("Status") == "successful"

            wait(stable, 180, f"{job} v0 successful", 0.5)
            good_version = int(t.nomad_call("GET", f"/v1/job/{job}")["Version"])
            t.nomad_call("POST", "/v1/jobs", baseline_job(t, self.template_app, job,
                                                          t.crasher_pinned))
            self.result = measure_restore(t, job, job, good_version + 1, self.timeout_s, 0.5)
            status, dep = http("GET", f"{t.nomad}/v1/job/{job}/deployments")
            self.result["deployments"] = [
                (d.get("JobVersion"), d.get("Status"), d.get("StatusDescription"))
                for d in dep or []] if status == 200 else []
        except Exception as exc:  # reported in the results, not raised from a thread
            self.error = f"{type(exc).__name__}: {exc}"

    def finish(self) -> dict[str, Any]:
        self.join(max(0.0, self.timeout_s + 300 - (time.monotonic() - self.started_at)))
        if self.is_alive():
            return {"error": "still running past its deadline"}
        return self.result or {"error": self.error}
