"""The invariants every chaos run must keep, checked over the whole run at the end.

Input is a `RunData`: the client history (history.py), the platform's records and every
stream message (snapshot.py), every Nomad job version ever created (observe.NomadRecorder),
the messages the tap captured, the service logs, and the secret markers. `check(run)`
returns a `Verdict`: violations (each with its evidence) and the counts the soak prints.

The invariants (docs/chaos.md explains why each holds by design):

1. **Every accepted deploy reaches exactly one terminal state.** A 202 (or 200 replay)
   names a deploy whose record exists and is terminal; its status history only takes
   steps the state machine allows, and after its outcome only the two documented late
   steps (`healthy → failed/rolled_back` for a crash loop, `failed → rolled_back` when the
   automatic rollback succeeded); the timeline carries exactly one `deploy.finished` for
   it, with the record's final status. The same holds for every deploy the platform made
   itself (automatic rollbacks) and every other deploy record of the scenario's apps.
2. **Nomad job versions equal the releases rolled out.** Per app, no release appears in
   two job versions, every version names a release that exists and was made by the
   deploy its Meta names, every release the platform announced as submitted has a job
   version, and no deploy has two releases. And the other way round ("submission"): a
   deploy whose release runs in Nomad records `job_modify_index` / `job_version`
   (reliability.md scenario 5) and has its `rollout.submitted` on the timeline.
3. **No rollback twice.** At most one `rollback.started` per deploy, at most one
   automatic rollback deploy (and release) per failed deploy, and a rollback never gets
   a rollback of its own. (Also: no `drift.detected`, since nothing outside Shaman
   touches a job in these runs, every drift report is a false one.)
4. **No secret marker in any sink**: captured messages, stream contents (KV history
   included), API responses, Nomad job JSON, every log file under the stack home.
5. **The api never answers 500**, and while NATS was down it answered 503 with
   Retry-After, never a 202 (a 202 for a deploy marked "could not queue" is a false 202).

Deploy records of the scenario's apps that no client call was told about ("zombies")
are tolerated up to the number of calls whose outcome is unknown (`info`); more would be
work the client was told was refused.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from shared.events.deploy import TERMINAL_STATUSES
from shared.records import DeployRecord, can_transition
from tests.chaos.history import History, Op
from tests.chaos.observe import Captured, JobVersion
from tests.chaos.snapshot import Snapshot

QUEUE_FAILED = "could not queue the deploy"
#: Steps allowed after a deploy's first terminal status.
LATE_STEPS = {("healthy", "failed"), ("healthy", "rolled_back"), ("failed", "rolled_back")}
#: A request invoked this long after NATS was killed must see the api know it.
OUTAGE_MARGIN_S = 1.0


@dataclass
class RunData:
    history: History
    snapshot: Snapshot
    apps: set[str]
    nomad_versions: dict[str, dict[int, JobVersion]] = field(default_factory=dict)
    nomad_jobs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    nomad_text: dict[str, str] = field(default_factory=dict)
    captured: list[Captured] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Violation:
    invariant: str  # "terminal", "lost", "outcome", "versions", "rollback", "secret", "api"...
    subject: str  # a deploy id, an app, a sink
    detail: str
    duplicate: bool = False  # something happened twice: counted as "duplicated"

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.detail}"


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    #: One line per deploy of the run (id, kind, status, steps, reason): the evidence.
    deploys: list[str] = field(default_factory=list)

    def add(self, invariant: str, subject: str, detail: str, *, duplicate: bool = False) -> None:
        self.violations.append(Violation(invariant, subject, detail, duplicate))

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> Counter[str]:
        return Counter(v.invariant for v in self.violations)

    def report(self) -> str:
        lines = [f"{len(self.violations)} violation(s)"]
        lines += [f"  {v}" for v in self.violations[:60]]
        if len(self.violations) > 60:
            lines.append(f"  ... and {len(self.violations) - 60} more")
        if self.notes:
            lines.append("notes:")
            lines += [f"  {n}" for n in self.notes[:30]]
        lines.append(f"stats: {self.stats}")
        return "\n".join(lines)


def check(run: RunData) -> Verdict:
    verdict = Verdict()
    deploys = {d.id: d for d in run.snapshot.deploys.values() if d.app in run.apps}
    finished = _finished_events(run.snapshot, set(deploys))
    _accepted_deploys(run, deploys, verdict)
    _one_outcome(deploys, finished, verdict)
    _versions(run, deploys, verdict)
    _rollbacks(run, deploys, verdict)
    _no_drift(run, verdict)
    _api_answers(run.history, run.apps, verdict)
    _zombies(run.history, deploys, run.apps, verdict)
    if run.markers:
        _secrets(run, verdict)
    _stats(run, deploys, finished, verdict)
    for record in sorted(deploys.values(), key=lambda d: (d.app, d.created_at)):
        verdict.deploys.append(
            f"{record.app} {record.id} {record.kind}{' automatic' if record.automatic else ''}"
            f" release={record.release} job_version={record.job_version} "
            f"{'→'.join(_steps(record))} reason={(record.reason or '')[:300]!r}")
    return verdict


# -- 1. one terminal state --------------------------------------------------------------


def _finished_events(snapshot: Snapshot, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in snapshot.timeline:
        if event.get("type") == "deploy.finished" and event.get("deploy_id") in ids:
            out[str(event["deploy_id"])].append(event)
    return out


def _accepted_deploys(run: RunData, deploys: dict[str, DeployRecord], verdict: Verdict) -> None:
    for op in run.history.deploys(run.apps):
        if not op.accepted:
            continue
        deploy_id = op.deploy_id
        assert deploy_id is not None
        record = deploys.get(deploy_id)
        if record is None:
            verdict.add("lost", deploy_id, f"accepted ({op.status}) by op {op.index} but no "
                                           "deploy record exists")
            continue
        if record.status == "failed" and (record.reason or "").startswith(QUEUE_FAILED):
            verdict.add("api", deploy_id, f"false {op.status}: op {op.index} was answered "
                                          f"{op.status} but the deploy was never queued")
        if record.status not in TERMINAL_STATUSES:
            verdict.add("lost", deploy_id, f"accepted by op {op.index} but still "
                                           f"{record.status} at the end (history "
                                           f"{_steps(record)})")


def _steps(record: DeployRecord) -> list[str]:
    return [h.status for h in record.history]


def _one_outcome(
    deploys: dict[str, DeployRecord], finished: dict[str, list[dict[str, Any]]],
    verdict: Verdict,
) -> None:
    for deploy_id, record in deploys.items():
        steps = _steps(record)
        if record.status not in TERMINAL_STATUSES:
            # Reported as "lost" for accepted deploys; here for the platform's own.
            if record.automatic or record.kind == "rollback":
                verdict.add("terminal", deploy_id, f"rollback deploy still {record.status}")
            continue
        previous: str | None = None  # the first entry is where the record was created
        first_terminal: str | None = None
        for step in steps:
            if previous is None:
                pass
            elif step == previous:
                verdict.add("terminal", deploy_id, f"status {step} written twice: {steps}")
            elif first_terminal is not None:
                if (previous, step) not in LATE_STEPS:
                    verdict.add("terminal", deploy_id,
                                f"moved {previous} → {step} after its outcome: {steps}")
            elif not can_transition(previous, step):
                verdict.add("terminal", deploy_id, f"illegal step {previous} → {step}: {steps}")
            if step in TERMINAL_STATUSES and first_terminal is None:
                first_terminal = step
            previous = step
        if steps and steps[-1] != record.status:
            verdict.add("terminal", deploy_id,
                        f"history ends {steps[-1]} but the record says {record.status}")
        if record.status == "rolled_back" and (
            record.rollback is None or record.rollback.outcome != "succeeded"
        ):
            verdict.add("terminal", deploy_id, "rolled_back without a succeeded rollback")
        if record.rollback is not None and record.rollback.outcome is None:
            verdict.add("terminal", deploy_id, "its automatic rollback never got an outcome")
        events = finished.get(deploy_id, [])
        statuses = [e.get("status") for e in events]
        if not events:
            verdict.add("outcome", deploy_id,
                        f"ended {record.status} but no deploy.finished was published "
                        f"(history {steps})")
        elif len(set(statuses)) < len(statuses):
            verdict.add("outcome", deploy_id, f"{len(events)} deploy.finished events: {statuses}",
                        duplicate=True)
        elif any(pair not in LATE_STEPS for pair in pairwise(statuses)):
            # More than one only for an outcome that changed later (healthy, then a crash
            # loop rolled it back): one deploy.finished per status, in a legal order.
            verdict.add("outcome", deploy_id, f"deploy.finished events out of order: {statuses}")
        elif statuses[-1] != record.status:
            verdict.add("outcome", deploy_id, f"deploy.finished says {statuses[-1]} "
                                              f"but the record ends {record.status}")


# -- 2. job versions and releases --------------------------------------------------------


def _versions(run: RunData, deploys: dict[str, DeployRecord], verdict: Verdict) -> None:
    releases = {k: r for k, r in run.snapshot.releases.items() if r.app in run.apps}
    per_deploy: dict[str, list[int]] = defaultdict(list)
    for rel in releases.values():
        per_deploy[rel.deploy_id].append(rel.version)
    for deploy_id, numbers in per_deploy.items():
        if len(numbers) > 1:
            verdict.add("versions", deploy_id, f"one deploy, {len(numbers)} releases: "
                                               f"{sorted(numbers)}", duplicate=True)
    for deploy_id, record in deploys.items():
        if record.release is None:
            continue
        own = releases.get(f"{record.app}.{record.release}")
        if own is None:
            verdict.add("versions", deploy_id, f"names release v{record.release}, which "
                                               "does not exist")
        elif own.deploy_id != deploy_id:
            verdict.add("versions", deploy_id, f"names release v{record.release}, which "
                                               f"belongs to {own.deploy_id}")

    submitted: dict[str, set[str]] = defaultdict(set)
    for event in run.snapshot.timeline:
        if event.get("type") == "rollout.submitted" and event.get("app") in run.apps:
            submitted[str(event["app"])].add(str(event.get("release")))

    table: dict[str, dict[str, int]] = {}
    for app in sorted(run.apps):
        versions = run.nomad_versions.get(app, {})
        job = run.nomad_jobs.get(app)
        by_release: dict[str, list[int]] = defaultdict(list)
        for v in versions.values():
            if v.stop or v.release is None:
                continue
            by_release[v.release].append(v.version)
            running = releases.get(f"{app}.{v.release}")
            if running is None:
                verdict.add("versions", app, f"job version {v.version} runs release "
                                             f"v{v.release}, which does not exist")
            elif v.deploy_id != running.deploy_id:
                verdict.add("versions", app, f"job version {v.version} names deploy "
                                             f"{v.deploy_id} but release v{v.release} "
                                             f"belongs to {running.deploy_id}")
        for release, same in by_release.items():
            if len(same) > 1:
                # A scale changes the count, not the release: only equal counts are doubles.
                counts = {versions[n].count for n in same}
                if len(counts) == len(same):
                    continue
                verdict.add("versions", app, f"release v{release} registered as "
                                             f"{len(same)} job versions {sorted(same)}",
                            duplicate=True)
        for release in sorted(submitted.get(app, set()) - set(by_release)):
            verdict.add("versions", app, f"release v{release} was announced as submitted "
                                         "but no job version runs it")
        for release, same in sorted(by_release.items()):
            owner = versions[same[0]].deploy_id or ""
            rolled_out = deploys.get(owner)
            if rolled_out is None:
                continue
            if rolled_out.job_modify_index is None or rolled_out.job_version is None:
                verdict.add("submission", owner,
                            f"release v{release} runs as job version {sorted(same)} but the "
                            f"deploy ({rolled_out.status}) never recorded job_modify_index/"
                            f"job_version")
            if release not in submitted.get(app, set()):
                verdict.add("submission", owner,
                            f"release v{release} runs as job version {sorted(same)} but no "
                            "rollout.submitted was ever published for it")
        expected = int(job["Version"]) + 1 if job else 0
        if job and len(versions) < expected:
            verdict.notes.append(f"{app}: saw {len(versions)} of {expected} job versions "
                                 "(the rest were pruned before they could be read)")
        table[app] = {"job_versions": expected, "releases_in_nomad": len(by_release),
                      "releases": sum(1 for r in releases.values() if r.app == app),
                      "submitted": len(submitted.get(app, set()))}
    verdict.stats["nomad"] = table


# -- 3. no rollback twice ---------------------------------------------------------------------


def _rollbacks(run: RunData, deploys: dict[str, DeployRecord], verdict: Verdict) -> None:
    started = Counter(str(e.get("deploy_id")) for e in run.snapshot.timeline
                      if e.get("type") == "rollback.started" and e.get("app") in run.apps)
    for deploy_id, n in started.items():
        if n > 1:
            verdict.add("rollback", deploy_id, f"{n} rollback.started events", duplicate=True)
    children = Counter(d.rollback_for for d in deploys.values() if d.automatic and d.rollback_for)
    for parent, n in children.items():
        if n > 1:
            verdict.add("rollback", str(parent), f"{n} automatic rollback deploys",
                        duplicate=True)
    for deploy_id, record in deploys.items():
        if (record.automatic or record.kind == "rollback") and record.rollback is not None:
            verdict.add("rollback", deploy_id, "a rollback deploy requested a rollback itself",
                        duplicate=True)
        if deploy_id.endswith("-rollback-rollback"):
            verdict.add("rollback", deploy_id, "a rollback of a rollback exists", duplicate=True)


def _no_drift(run: RunData, verdict: Verdict) -> None:
    """Nobody edits Nomad jobs by hand in a chaos run: every drift report is a false one."""
    for event in run.snapshot.timeline:
        if event.get("type") == "drift.detected" and event.get("app") in run.apps:
            verdict.add("drift", str(event.get("app")),
                        f"drift.detected for release v{event.get('release')} (deploy "
                        f"{event.get('deploy_id') or '-'}): {event.get('description')!r}, "
                        "but nothing outside Shaman touched the job")


# -- 4. secrets ------------------------------------------------------------------------------


def _secrets(run: RunData, verdict: Verdict) -> None:
    markers = [m.encode() for m in run.markers]

    def scan(sink: str, where: str, data: bytes) -> None:
        for marker in markers:
            if marker in data:
                at = data.index(marker)
                context = data[max(0, at - 80): at + 40].decode(errors="replace")
                verdict.add("secret", sink, f"marker found in {where}: …{context}…")

    for m in run.captured:
        scan("nats message", m.subject, m.data + repr(m.headers).encode())
    for s in run.snapshot.messages:
        scan("stream", f"{s.stream}#{s.seq} {s.subject}", s.data + repr(s.headers).encode())
    for op in run.history.ops:
        scan("api response", f"op {op.index} {op.f} {op.status}",
             op.text.encode() + repr(op.headers).encode())
    for app, text in run.nomad_text.items():
        scan("nomad", f"job {app}", text.encode())
    for path in run.logs:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        scan("log", str(path), data)


# -- 5. the api's answers --------------------------------------------------------------------


def _api_answers(history: History, apps: set[str], verdict: Verdict) -> None:
    for op in history.ops:
        if op.status is not None and op.status >= 500 and op.status != 503:
            verdict.add("api", f"op {op.index}", f"{op.f} {op.value.get('path')} answered "
                                                 f"{op.status}: {op.text[:200]}")
    for start, end in history.windows("kill", "start", "nats"):
        for op in history.ops:
            if op.complete_t is None or op.invoke_t < start + OUTAGE_MARGIN_S:
                continue
            if op.complete_t > end:
                continue
            if op.status == 503:
                if "Retry-After" not in op.headers:
                    verdict.add("api", f"op {op.index}", "503 without Retry-After")
                continue
            verdict.add("api", f"op {op.index}",
                        f"{op.f} while NATS was down answered "
                        f"{op.status if op.status is not None else op.error}, not 503")


def _zombies(
    history: History, deploys: dict[str, DeployRecord], apps: set[str], verdict: Verdict
) -> None:
    told = {op.deploy_id for op in history.ops if op.deploy_id}
    unknown = Counter(op.app for op in history.deploys(apps) if op.outcome == "info")
    zombies: dict[str, list[DeployRecord]] = defaultdict(list)
    for record in deploys.values():
        if record.id in told or record.automatic or record.rollback_for:
            continue
        if record.status == "failed" and (record.reason or "").startswith(QUEUE_FAILED):
            continue  # answered 503; the record only says so
        zombies[record.app].append(record)
    for app, records in zombies.items():
        summary = [f"{r.id}:{r.status}" for r in records]
        if len(records) > unknown.get(app, 0):
            verdict.add("api", app, f"{len(records)} deploy(s) no client was told about, "
                                    f"only {unknown.get(app, 0)} call(s) with unknown outcome: "
                                    f"{summary}")
        else:
            verdict.notes.append(f"{app}: {len(records)} deploy(s) from calls with unknown "
                                 f"outcome: {summary}")


# -- the soak's table ---------------------------------------------------------------------------


def _stats(
    run: RunData, deploys: dict[str, DeployRecord],
    finished: dict[str, list[dict[str, Any]]], verdict: Verdict,
) -> None:
    accepted: dict[str, Op] = {}
    for op in run.history.deploys(run.apps):
        if op.accepted and op.deploy_id and op.deploy_id not in accepted:
            accepted[op.deploy_id] = op
    statuses = Counter(deploys[d].status for d in accepted if d in deploys)
    lost = sum(1 for d in accepted if d not in deploys
               or deploys[d].status not in TERMINAL_STATUSES)
    duplicated = sum(1 for v in verdict.violations if v.duplicate)
    latencies = []
    for deploy_id, op in accepted.items():
        events = finished.get(deploy_id)
        if not events:
            continue
        end = datetime.fromisoformat(str(events[0]["time"]).replace("Z", "+00:00"))
        answered = (op.complete_t or op.invoke_t) - op.invoke_t
        accepted_at = op.invoke_wall + timedelta(seconds=answered)
        latencies.append((end - accepted_at).total_seconds())
    verdict.stats.update({
        "accepted": len(accepted),
        "healthy": statuses.get("healthy", 0),
        "failed": statuses.get("failed", 0),
        "rolled_back": statuses.get("rolled_back", 0),
        "superseded": statuses.get("superseded", 0),
        "cancelled": statuses.get("cancelled", 0),
        "lost": lost,
        "duplicated": duplicated,
        "unknown_calls": sum(1 for op in run.history.deploys(run.apps) if op.outcome == "info"),
        "refused_calls": sum(1 for op in run.history.deploys(run.apps) if op.outcome == "fail"),
        "automatic_rollbacks": sum(1 for d in deploys.values() if d.automatic),
        "answers_503": sum(1 for op in run.history.ops if op.status == 503),
        "latency_s": percentiles(latencies),
    })


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return round(ordered[index], 3)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 3)}
