"""The soak: many deploys across many apps, a third of them bad, with random faults.

    python -m tests.chaos.soak [--deploys 300] [--apps 30] [--bad-fraction 0.33]
                               [--seed N] [--concurrency 10] [--fault-interval 6]
                               [--no-faults] [--strict] [--artifacts DIR]

It starts its own chaos stack (tests/chaos/stack.py: every component on free ports in a
temp home, localnomad's simulated runtime, small Nomad timings), creates the apps, and
runs the deploys: each app's deploys one after another (its first one good, so there is
always something to roll back to), several apps at once. A bad deploy is a release whose
task crashes at start or whose HTTP check fails (localnomad's control surface), with
automatic rollback on. Clients use an Idempotency-Key per deploy and retry every call whose
outcome they do not know (a reset, a 503) with the same key, as the api asks them to.

Meanwhile a nemesis injects a random fault every `--fault-interval` seconds, all drawn
from one seeded generator and recorded in the history: SIGKILL + restart of a service or of
NATS, SIGSTOP past the ack wait + SIGCONT, a service restarted with a crash point armed,
Nomad answering 5xx for the next N requests, Nomad slow for a while, Nomad's event
streams cut with the event buffer dropped.

At the end everything is healed, the deploys are given time to settle, and the invariants
(tests/chaos/invariants.py) are checked over the whole run (the services' logs are kept
with the history and the verdict in the artifacts directory). It prints a table: accepted,
healthy, failed, rolled back, superseded, lost, duplicated, and accept → outcome latency
percentiles; then any invariant violation. Exit status 1 if any deploy was lost or
duplicated (with --strict: if any invariant was violated).

Not a benchmark: the latencies include the faults and this machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.components.base import ComponentError
from services.api.crashpoints import KNOWN as API_CRASHPOINTS
from services.builder.crashpoints import KNOWN as BUILDER_CRASHPOINTS
from services.scheduler.crashpoints import KNOWN as SCHEDULER_CRASHPOINTS
from tests.chaos.history import Op
from tests.chaos.invariants import Verdict
from tests.chaos.stack import ChaosStack
from tests.chaos.world import BadMode, World

TAGS = ("v1", "v2", "v3")
OUTCOME_TIMEOUT_S = 240.0
RETRY_PAUSE_S = 0.5  # a client's pause before it retries an unknown outcome


@dataclass
class Planned:
    index: int
    app: str
    tag: str
    bad: BadMode | None
    deploy_id: str | None = None
    status: str | None = None


@dataclass
class Soak:
    args: argparse.Namespace
    world: World
    rng: random.Random
    plan: list[Planned] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    faults: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)

    # -- the plan ----------------------------------------------------------------------

    def make_plan(self, apps: list[str]) -> None:
        """Which app each deploy goes to, and which are bad: all from the seed."""
        n = self.args.deploys
        firsts = min(len(apps), n)
        # Each app's first deploy is good; the bad ones are drawn from the rest so that
        # the overall fraction is what was asked for.
        bad_count = min(n - firsts, round(n * self.args.bad_fraction))
        later = list(range(firsts, n))
        bad = set(self.rng.sample(later, bad_count))
        for i in range(n):
            app = apps[i % len(apps)]
            mode: BadMode | None = None
            if i in bad:
                mode = self.rng.choice(["crash", "checks"])
            self.plan.append(Planned(i, app, TAGS[(i // len(apps)) % len(TAGS)], mode))

    # -- clients -------------------------------------------------------------------------

    async def deploy(self, item: Planned) -> None:
        """One planned deploy, retried with its key until the api gives a definite answer."""
        key = f"soak-{self.args.seed}-{item.index}"
        process = f"client-{item.app}"
        deadline = time.monotonic() + OUTCOME_TIMEOUT_S
        op: Op | None = None
        while time.monotonic() < deadline:
            if item.bad is not None and op is None:
                with contextlib.suppress(Exception):  # Nomad may be the one failing now
                    await self.world.make_bad(item.app, item.bad)
            op = await self.world.deploy(item.app, item.tag, key=key, process=process)
            if op.outcome == "ok" and op.deploy_id:
                item.deploy_id = op.deploy_id
                break
            if op.outcome == "fail" and op.status not in (409, 429, 503):
                raise RuntimeError(f"deploy {item.index} refused: {op.status} {op.text[:300]}")
            await asyncio.sleep(RETRY_PAUSE_S)
        if item.deploy_id is None:
            self.stuck.append(f"deploy {item.index} ({item.app}) never accepted")
            return
        try:
            record = await self.world.wait_outcome(item.deploy_id, timeout=OUTCOME_TIMEOUT_S)
            item.status = record.status
        except AssertionError:
            self.stuck.append(f"{item.deploy_id} ({item.app}) had no outcome after "
                              f"{OUTCOME_TIMEOUT_S:.0f}s")

    async def app_worker(self, app: str, gate: asyncio.Semaphore) -> None:
        for item in (p for p in self.plan if p.app == app):
            async with gate:
                await self.deploy(item)

    async def reader(self, apps: list[str]) -> None:
        """Reads the api all along, so that it is asked during every fault (the checker
        wants 503 + Retry-After, never a 500, while NATS is down)."""
        rng = random.Random(self.args.seed + 1)
        while not self.stop.is_set():
            await self.world.client.get_app(rng.choice(apps), process="reader")
            await self.pause_for(0.3)

    # -- the nemesis ---------------------------------------------------------------------

    async def pause_for(self, seconds: float) -> None:
        """The length of one fault (a schedule, not a wait for a condition)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def nemesis(self) -> None:
        w = self.world
        services = ("api", "builder", "scheduler", "watcher")
        crashpoints = {
            "api": tuple(sorted(API_CRASHPOINTS)),
            "builder": tuple(sorted(BUILDER_CRASHPOINTS)),
            "scheduler": tuple(sorted(SCHEDULER_CRASHPOINTS)),
            "watcher": ("after_healthy", "after_outcome", "after_rollback_command"),
        }
        menu = ("kill-service", "kill-nats", "pause-service", "crashpoint", "nomad-5xx",
                "nomad-slow", "nomad-events")
        await self.pause_for(self.args.fault_interval)
        while not self.stop.is_set():
            fault = self.rng.choice(menu)
            self.faults[fault] += 1
            try:
                if fault == "kill-service":
                    await w.restart(self.rng.choice(services))
                elif fault == "kill-nats":
                    await w.kill("nats")
                    await self.pause_for(self.rng.uniform(1.0, 4.0))
                    await w.start("nats")
                elif fault == "pause-service":
                    name = self.rng.choice(("builder", "scheduler", "watcher"))
                    await w.pause(name)
                    await self.pause_for(self.rng.uniform(2.0, 5.0))  # past the 3 s ack wait
                    await w.resume(name)
                elif fault == "crashpoint":
                    name = self.rng.choice(tuple(crashpoints))
                    point = self.rng.choice(crashpoints[name])
                    try:
                        await w.restart(name, SHAMAN_CRASHPOINT=point)
                    except ComponentError:  # it got there while starting up (a resync)
                        w.fault("crashed", name, "crash point reached while starting")
                    else:
                        with contextlib.suppress(AssertionError):
                            await w.wait_crashed(name, timeout=20)
                    await w.restart(name) if w.stack.running(name) else await w.start(name)
                elif fault == "nomad-5xx":
                    n = self.rng.randint(3, 15)
                    status = self.rng.choice((500, 502, 503))
                    await w.nomad.fault(prefix="/v1/", fail_next=n, status=status)
                    w.fault("fault", "nomad", f"next {n} requests: {status}")
                elif fault == "nomad-slow":
                    ms = self.rng.randint(300, 2500)
                    await w.nomad.fault(prefix="/v1/", latency_ms=ms)
                    w.fault("fault", "nomad", f"every answer {ms} ms late")
                    await self.pause_for(self.rng.uniform(2.0, 6.0))
                    await w.nomad.clear_faults()
                    w.fault("heal", "nomad")
                elif fault == "nomad-events":
                    await w.nomad.cut_streams()
                    await w.nomad.drop_buffer()
                    w.fault("cut", "nomad-events", "streams cut, event buffer dropped")
            except Exception as exc:  # a fault that could not be applied is recorded, not fatal
                w.fault("nemesis-error", fault, repr(exc)[:300])
                await self.heal()
            await self.pause_for(self.rng.uniform(0.5, 1.5) * self.args.fault_interval)

    async def heal(self) -> None:
        """Everything running, nothing paused, no Nomad faults."""
        w = self.world
        for name in ("nats", "openbao", "registry", "localnomad",
                     "api", "builder", "scheduler", "watcher"):
            with contextlib.suppress(Exception):
                w.stack.resume(name)
            if not w.stack.running(name):
                with contextlib.suppress(Exception):
                    await w.start(name)
        with contextlib.suppress(Exception):
            await w.nomad.clear_faults()

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> Verdict:
        apps = [await self.world.create_app(f"soak-{i:03d}-{self.args.seed % 1000}", tags=TAGS)
                for i in range(self.args.apps)]
        self.make_plan(apps)
        gate = asyncio.Semaphore(self.args.concurrency)
        nemesis = None if self.args.no_faults else asyncio.create_task(self.nemesis())
        reader = asyncio.create_task(self.reader(apps))
        try:
            await asyncio.gather(*(self.app_worker(app, gate) for app in apps))
        finally:
            self.stop.set()
            await reader
            if nemesis is not None:
                await nemesis
            await self.heal()
        await self.world.settle(timeout=OUTCOME_TIMEOUT_S)
        return await self.world.verdict()


def table(verdict: Verdict, soak: Soak, seconds: float) -> str:
    s = verdict.stats
    lat = s["latency_s"]
    rows: list[tuple[str, Any]] = [
        ("accepted", s["accepted"]), ("healthy", s["healthy"]), ("failed", s["failed"]),
        ("rolled back", s["rolled_back"]), ("superseded", s["superseded"]),
        ("cancelled", s["cancelled"]), ("lost", s["lost"]), ("duplicated", s["duplicated"]),
        ("automatic rollbacks", s["automatic_rollbacks"]),
        ("deploy calls with unknown outcome (retried)", s["unknown_calls"]),
        ("deploy calls refused (503/409, retried)", s["refused_calls"]),
        ("api answers 503 (all calls)", s["answers_503"]),
        ("latency accept → outcome p50 (s)", lat["p50"]),
        ("latency accept → outcome p90 (s)", lat["p90"]),
        ("latency accept → outcome p99 (s)", lat["p99"]),
        ("latency accept → outcome max (s)", lat["max"]),
        ("invariant violations", len(verdict.violations)),
        ("faults injected", sum(soak.faults.values())),
        ("wall time (s)", round(seconds, 1)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=300)
    parser.add_argument("--apps", type=int, default=30)
    parser.add_argument("--bad-fraction", type=float, default=0.33)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="apps deploying at the same time")
    parser.add_argument("--fault-interval", type=float, default=6.0,
                        help="mean seconds between two faults")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 on any invariant violation, not only lost/duplicated")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="where the history and the verdict go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    if args.apps < 1 or args.deploys < 1 or not 0 <= args.bad_fraction <= 1:
        parser.error("need --apps >= 1, --deploys >= 1 and 0 <= --bad-fraction <= 1")
    return args


async def amain(args: argparse.Namespace) -> int:
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="shaman-soak-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="shaman-soak-home-"))
    print(f"soak: seed {args.seed}, {args.deploys} deploys over {args.apps} apps, "
          f"bad fraction {args.bad_fraction}, faults "
          f"{'off' if args.no_faults else f'every ~{args.fault_interval:g}s'}; "
          f"stack home {home}", flush=True)
    stack = ChaosStack(home)
    started = time.monotonic()
    await asyncio.to_thread(stack.up)
    print(f"soak: stack up in {time.monotonic() - started:.1f}s", flush=True)
    try:
        async with World(stack, artifacts, name="soak") as world:
            soak = Soak(args, world, random.Random(args.seed))
            began = time.monotonic()
            verdict = await soak.run()
            seconds = time.monotonic() - began
    finally:
        await asyncio.to_thread(stack.down)
        # The logs are evidence for the verdict; the rest of the home (NATS' store, ...) goes.
        logs = artifacts / "logs"
        for log in stack.log_files():
            target = logs / log.relative_to(home)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, target)
        shutil.rmtree(home, ignore_errors=True)
    print()
    print(table(verdict, soak, seconds))
    print()
    print(f"faults: {dict(sorted(soak.faults.items()))}")
    bad_planned = sum(1 for p in soak.plan if p.bad)
    print(f"planned bad releases: {bad_planned} of {len(soak.plan)}")
    for line in soak.stuck:
        print(f"stuck: {line}")
    if verdict.violations:
        print(f"\n{len(verdict.violations)} invariant violation(s) "
              f"({dict(verdict.kinds())}):")
        for v in verdict.violations[:40]:
            print(f"  {v}")
    print(f"\nhistory and verdict: {artifacts}")
    (artifacts / "soak-summary.json").write_text(json.dumps({
        "seed": args.seed, "args": {k: str(v) for k, v in vars(args).items()},
        "stats": verdict.stats, "faults": soak.faults, "seconds": seconds,
        "violations": [str(v) for v in verdict.violations],
    }, indent=2, default=str) + "\n")
    failed = verdict.stats["lost"] > 0 or verdict.stats["duplicated"] > 0
    if args.strict and verdict.violations:
        failed = True
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

