"""`python -m bench` (what `make bench` runs): every benchmark, each beside its floor.

    python -m bench            # everything (~15 min): bench/results.json, bench/results.md
    python -m bench --quick    # under a minute: one JSON object on stdout, logs on stderr

Phases, in order (each in its own temporary directory, on free ports):
1. `make run` cold and warm (bench/makerun_bench.py, podman); the stack it leaves running
   then hosts the restore benchmark, whose Nomad-default baseline (minutes: Nomad's
   progress deadline) starts at once in a background thread;
2. deploys accepted per second and SSE fan-out, api against floor (bench/accept_bench.py);
3. the simulated-runtime stack: POST → job registered, burst, failure → rollback registered,
   RSS idle and under load, watcher decoding (bench/e2e_bench.py);
4. localnomad (bench/localnomad_bench.py) and the builder (bench/builder_bench.py), each
   run as its own command, their JSON read back;
5. the Shaman restore trials (bench/restore_bench.py), then the baseline's result.
`--quick` runs 2, 3 and a small 4 (no builds, no podman, no `make run`).

A phase that fails is reported under `errors` and the others still run. The figures and
their references are assembled here (`figures()`); bench/report.py formats them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import Figure, markdown_report, results_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run_json_command(module: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    """Run `python -m module args` and return the JSON object it prints last."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.splitlines()[-10:])
        raise RuntimeError(f"{module} exited {done.returncode}: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    return done.stdout.strip()


FULL_PHASES = ("makerun", "accept", "e2e", "localnomad", "builder")


class Run:
    """Raw results of each phase, and what was skipped or failed.

    `save` is called after every phase, so a run that dies late still leaves what it
    measured.
    """

    def __init__(self, save: Callable[[Run], None] | None = None) -> None:
        self.raw: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.save = save

    def phase(self, name: str, fn: Callable[[], Any], keep: bool = True) -> Any:
        """Run one phase; its result goes into the report unless `keep` is false."""
        log(f"{name} ...")
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            log(f"{name} failed: {exc}\n{traceback.format_exc()}")
            result = None
        else:
            if keep:
                self.raw[name] = result
            log(f"{name} done in {time.perf_counter() - started:.0f}s")
        if self.save is not None:
            self.save(self)
        return result


class Writer:
    """Writes results.json and results.md (full runs), merging with an earlier file."""

    def __init__(self, out: Path, meta: dict[str, Any], merge: bool) -> None:
        self.out = out
        self.meta = meta
        self.base: dict[str, Any] = {}
        if merge and out.exists():
            self.base = json.loads(out.read_text())

    def results(self, run: Run) -> tuple[dict[str, Any], list[Figure]]:
        raw = {**self.base.get("raw", {}), **run.raw}
        errors = {k: v for k, v in self.base.get("errors", {}).items() if k not in run.raw}
        errors.update(run.errors)
        skipped = {k: v for k, v in self.base.get("skipped", {}).items()
                   if k not in run.raw and k not in run.errors}
        skipped.update(run.skipped)
        meta = dict(self.meta, load_after=load_average(),
                    duration_s=round(time.perf_counter() - self.meta["t0"], 1))
        meta.pop("t0")
        if self.base:
            meta["merged_into"] = self.base.get("meta", {})
        figs = figures(raw)
        return results_json(meta, figs, raw, skipped, errors), figs

    def __call__(self, run: Run) -> None:
        results, figs = self.results(run)
        # default=str: a value the benches did not expect must never lose a run's figures.
        self.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        self.out.with_suffix(".md").write_text(markdown_report(results, figs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="under a minute; print JSON only")
    parser.add_argument("--out", type=Path, default=HERE / "results.json",
                        help="results file (full runs; the Markdown goes beside it)")
    parser.add_argument("--only", default=",".join(FULL_PHASES),
                        help=f"full runs: comma-separated phases of {', '.join(FULL_PHASES)} "
                             "(makerun includes the restore benchmark)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other phases' results already in --out")
    args = parser.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    if only - set(FULL_PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(only - set(FULL_PHASES)))}")
    from shared.logging import configure_logging

    configure_logging("warning", "console", "bench")
    meta = {
        "command": "python -m bench" + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if only != set(FULL_PHASES) and not args.quick else ""),
        "quick": args.quick, "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_before": load_average(), "t0": time.perf_counter(),
    }
    writer = Writer(args.out, meta, merge=args.merge and not args.quick)
    run = Run(save=None if args.quick else writer)
    # Anything a library prints must not end up in the one JSON object on stdout.
    with contextlib.redirect_stdout(sys.stderr), \
            tempfile.TemporaryDirectory(prefix="shaman-bench-") as tmp:
        work = Path(tmp)
        if args.quick:
            quick_phases(run, work)
        else:
            full_phases(run, work, only)
    results, figs = writer.results(run)
    if args.quick:
        print(json.dumps(results, default=str))
    else:
        writer(run)
        print(markdown_report(results, figs))
        log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def quick_phases(run: Run, work: Path) -> None:
    from bench import accept_bench, e2e_bench

    run.phase("accept", lambda: asyncio.run(accept_bench.run(work / "accept", quick=True)))
    run.phase("e2e", lambda: asyncio.run(e2e_bench.run(work / "e2e", quick=True)))
    run.phase("localnomad", lambda: run_json_command(
        "bench.localnomad_bench", ["--samples", "10", "--jobs", "50"], 60))
    run.skipped.update({
        "builder": "--quick: builds take minutes", "restore": "--quick: podman, minutes",
        "makerun": "--quick: podman, minutes"})


def full_phases(run: Run, work: Path, only: set[str]) -> None:
    from bench import accept_bench, e2e_bench, makerun_bench, restore_bench

    for name in set(FULL_PHASES) - only:
        run.skipped[name] = "not selected (--only)"
    makerun = target = baseline = None
    if "makerun" in only:
        makerun = run.phase("makerun", lambda: makerun_bench.run(work / "makerun"))
    if makerun is not None:
        target = run.phase("restore_setup", lambda: restore_setup(work / "makerun"), keep=False)
        if target is not None:
            baseline = restore_bench.Baseline(target, "restore-template", "nomaddefault-0",
                                              timeout_s=1200)
            baseline.start()
    try:
        if "accept" in only:
            run.phase("accept",
                      lambda: asyncio.run(accept_bench.run(work / "accept", quick=False)))
        if "e2e" in only:
            run.phase("e2e", lambda: asyncio.run(e2e_bench.run(work / "e2e", quick=False)))
        if "localnomad" in only:
            run.phase("localnomad", lambda: run_json_command("bench.localnomad_bench", [], 600))
        if "builder" in only:
            run.phase("builder", lambda: run_json_command(
                "bench.builder_bench", ["--builds", "10"], 1800))
        if target is not None:
            trials = run.phase("restore", lambda: restore_trials(target, 3))
            if baseline is not None and trials is not None:
                log("restore: waiting for Nomad's default policy (its progress deadline) ...")
                trials["nomad_default"] = baseline.finish()
                run.phase("restore", lambda: trials)
    finally:
        if makerun is not None:
            with contextlib.suppress(Exception):
                makerun_bench.stop(Path(makerun["home"]), work / "makerun" / "makerun.log")


def restore_setup(makerun_work: Path) -> Any:
    from bench import restore_bench
    from devstack.stack import StackConfig

    config = StackConfig.load(makerun_work / "home", environ={})
    target = restore_bench.Target(config, makerun_work)
    # The baseline copies Shaman's rendered job for an app with the trial apps' settings.
    target.call("POST", "/v1/apps", {"name": "restore-template",
                                     "image": f"{target.registry}/hello", "port": 8080,
                                     **restore_bench.FAST})
    deploy = target.call("POST", "/v1/apps/restore-template/deploys", {"image": target.hello})
    restore_bench.wait(lambda: target.call(
        "GET", f"/v1/apps/restore-template/deploys/{deploy['id']}")["status"] == "healthy",
        180, "restore-template healthy")
    return target


def restore_trials(target: Any, trials: int) -> dict[str, Any]:
    from bench import restore_bench
    from bench.stats import summary

    results = [restore_bench.shaman_trial(target, f"restore-{i}") for i in range(trials)]
    return {"shaman": results,
            "shaman_s": summary([r["restore_s"] for r in results], digits=2)}


# -- figures --------------------------------------------------------------------------------------


def _get(raw: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(raw, dict) or key not in raw:
            return None
        raw = raw[key]
    return raw


def figures(raw: dict[str, Any]) -> list[Figure]:
    out: list[Figure] = []
    out += _accept_figures(raw.get("accept"))
    out += _e2e_figures(raw.get("e2e"))
    out += _restore_figures(raw.get("restore"))
    out += _localnomad_figures(raw.get("localnomad"))
    out += _builder_figures(raw.get("builder"))
    out += _makerun_figures(raw.get("makerun"))
    return out


def _accept_figures(a: Any) -> list[Figure]:
    if not a:
        return []
    sse = a["sse"]
    return [
        Figure("api.deploys_per_s", "deploys accepted per second, one api process "
               "(durable JetStream ack)", "deploys/s", a["deploys_per_s"]["api"],
               a["deploys_per_s"]["floor"],
               "aiohttp handler that only publishes with ack, same nats-server and load",
               higher_is_better=True,
               note=f"{a['concurrency']} connections, median of {a['rounds']} runs of "
                    f"{a['seconds_per_run']:g} s; p99 under load "
                    f"{a['accept_p99_ms_under_load']['api']:.0f} ms vs "
                    f"{a['accept_p99_ms_under_load']['floor']:.0f} ms"),
        Figure("api.sse_p99_ms", f"SSE delivery p99, {sse['subscribers']:,} subscribers, "
               f"{sse['events_per_s']:g} events/s", "ms", sse["p99_ms"]["api"],
               sse["p99_ms"]["floor"], "core NATS subscription, each event framed once and "
               "written to every transport", note=f"delivered {sse['delivered']['api']:.1%} "
               f"(floor {sse['delivered']['floor']:.1%}); p50 {sse['p50_ms']['api']:.1f} vs "
               f"{sse['p50_ms']['floor']:.1f} ms; the load generator published "
               f"{min(sse.get('events_published', {}).values(), default=0)} of "
               f"{sse.get('events_intended', '?')} events per run at worst; "
               "target p99 < 100 ms (issue 6)"),
    ]


def _e2e_figures(e: Any) -> list[Figure]:
    if not e:
        return []
    out = []
    cp = e["control_plane"]
    pipeline = "same hops, no logic: accept → JetStream → resolve digest → JetStream → register"
    stages = cp.get("stages_ms_median") or {}
    where = "; medians between the services' log lines: " + ", ".join(
        f"{k} {v:g} ms" for k, v in stages.items()) if stages else ""
    for q in ("p50", "p99"):
        out.append(Figure(f"e2e.deploy_to_registered_{q}_ms",
                          f"POST /deploys (image) → job registered in Nomad, {q}", "ms",
                          cp["shaman_ms"][q], cp["floor_ms"][q], pipeline,
                          note=f"n={cp['shaman_ms']['n']} each, interleaved; simulated runtime"
                               + (where if q == "p50" else "")))
    b = e["burst"]
    out.append(Figure("e2e.burst_deploys_per_s",
                      f"burst: {b['apps']} apps deployed at once ({b['concurrency']} in flight),"
                      " POST → every job registered", "deploys/s", b["shaman_deploys_per_s"],
                      b["floor_deploys_per_s"], "the same floor pipeline", higher_is_better=True))
    rb = e["rollback"]
    reactor = "event stream → JetStream → revert to the stable version"
    for q in ("p50", "p99"):
        out.append(Figure(f"e2e.fail_to_rollback_registered_{q}_ms",
                          f"deployment failed → rollback job registered in Nomad, {q}", "ms",
                          rb["shaman_ms"][q], rb["floor_ms"][q], reactor,
                          note=f"n={rb['shaman_ms']['n']}; watcher + scheduler running; "
                               "target p99 < 250 ms (issue 6)"))
    for every, summary in (rb.get("poll_detect_ms") or {}).items():
        if summary.get("n"):
            seconds = every.removeprefix("every_")
            out.append(Figure(
                f"e2e.rollback_vs_poll_{seconds}_p99_ms",
                f"deployment failed → rollback registered, p99, vs polling every {seconds}",
                "ms", rb["shaman_ms"]["p99"], summary["p99"],
                f"python-nomad polling /v1/deployment/:id every {seconds} (detection only)",
                reference_kind="baseline", note=f"poll p50 {summary['p50']:.0f} ms"))
    wd = e["watcher_decode"]
    out.append(Figure("watcher.events_per_s", "watcher: event-stream events decoded and mapped "
                      "to apps per second", "events/s", wd["decode_map_events_per_s"],
                      wd["decode_only_events_per_s"], "the same lines decoded (and re-indexed) "
                      "without the mapping", higher_is_better=True,
                      note=f"Nomad's envelopes from this run, p50 line "
                           f"{wd['decode_map_line_bytes_p50']} B; target > 10,000/s (issue 6)"))
    floor_rss = e.get("rss_floor_mb")
    for name in ("api", "builder", "scheduler", "watcher", "localnomad"):
        for state, key in (("idle", "rss_idle_mb"), ("under load", "rss_load_mb")):
            value = _get(e, key, name)
            if value is None:
                continue
            out.append(Figure(f"rss.{name}.{key.split('_')[1]}", f"RSS {name}, {state}", "MB",
                              value, floor_rss, "bare python, the services' libraries "
                              "imported (bench/rss.py)",
                              note="under load = peak during the burst" if state != "idle"
                              else ""))
    return out


def _restore_figures(r: Any) -> list[Figure]:
    if not r or "shaman_s" not in r:
        return []
    base = r.get("nomad_default") or {}
    ref = base.get("restore_s")
    note = "podman runtime; first crash → an alloc of a later version answers /health"
    if ref is None:
        note += f"; Nomad default: {base.get('error', 'not measured')}"
    return [Figure(f"restore.crash_on_start_{q}_s",
                   f"time to restore a release that crashes on start, {q}", "s",
                   r["shaman_s"][q], ref,
                   "Nomad's default policy alone (auto_revert, default restart/reschedule), "
                   "one trial", reference_kind="baseline",
                   note=f"n={r['shaman_s']['n']}; {note}; target p50 < 15 s (issue 6)")
            for q in ("p50", "p99")]


def _localnomad_figures(ln: Any) -> list[Figure]:
    if not ln:
        return []
    # bench/localnomad_bench.py runs without and with --data-dir; the devstack uses one.
    run = ln.get("simulated_with_data_dir") or ln.get("simulated") or ln
    plain = ln.get("simulated") or {}
    reg = run["register_to_all_running_ms"]
    ev = run["state_change_to_event_ms"]
    noop = run.get("floor_get_status_leader_ms") or {}
    floor_note = f"; a GET that does nothing: p50 {noop['p50']:.2f} ms" if noop else ""
    without = _get(plain, "register_to_all_running_ms", "p50")
    return [
        Figure("localnomad.register_p50_ms", "localnomad: register → 3 allocations running, p50",
               "ms", reg["p50"], 20, "issue 2", reference_kind="target",
               note=f"--data-dir on; p99 {reg['p99']:.1f} ms, n={reg['n']}"
                    + (f"; without --data-dir p50 {without:.1f} ms" if without else "")
                    + floor_note),
        Figure("localnomad.event_p99_ms", "localnomad: state change → event delivered, p99",
               "ms", ev["p99"], 10, "issue 2", reference_kind="target",
               note=f"p50 {ev['p50']:.2f} ms, {ev['idle_subscribers']} idle subscribers"),
        Figure("localnomad.rss_mb", f"localnomad RSS with {run['jobs_registered']:,} jobs", "MB",
               run["rss_mb"], 150, "issue 2", reference_kind="target"),
    ]


def _builder_figures(b: Any) -> list[Figure]:
    if not b:
        return []
    one = b["builds_per_minute_1_builder"]
    return [
        Figure("builder.builds_per_min_1", "builds per minute, 1 builder", "builds/min", one,
               note=f"{b['queued_builds']} small git builds queued, base image warm"),
        Figure("builder.builds_per_min_2", "builds per minute, 2 builders", "builds/min",
               b["builds_per_minute_2_builders"], 2 * one, "twice the 1-builder rate "
               "(perfect scaling)", higher_is_better=True,
               note="both copies on the same 2 cores"),
        Figure("builder.cached_rebuild_s", "cached rebuild of examples/hello (fetch, bud, push)",
               "s", b["cached_rebuild_s"], b.get("cached_rebuild_bud_s"),
               "its own `buildah bud` time", note=f"first build {b['first_build_s']:.1f} s"),
    ]


def _makerun_figures(m: Any) -> list[Figure]:
    if not m:
        return []
    policy = "the example's min_healthy_time (10 s): no deploy can be healthy sooner"
    return [
        Figure(f"makerun.{kind}_s", f"`make run` to healthy, {kind}", "s", m[kind]["total_s"],
               10.0, policy, reference_kind="floor",
               note=f"`shaman dev up` {m[kind]['up_s']:.1f} s + example build/deploy "
                    f"{m[kind]['example_deploy_s']:.1f} s; podman runtime; install.sh excluded")
        for kind in ("cold", "warm")
    ]


if __name__ == "__main__":
    sys.exit(main())
