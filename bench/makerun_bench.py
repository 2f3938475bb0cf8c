"""`make run` time to healthy: cold (fresh SHAMAN_HOME) and warm (the same home again).

`make run` is `scripts/install.sh`, then `shaman dev up`, then `python -m devstack.example
--deploy` (which builds examples/hello, deploys it and waits until it is healthy and
answers). This runs the last two exactly as the Makefile does, as subprocesses, in a fresh
temporary SHAMAN_HOME whose `stack.json` names free ports (so a stack someone left running
on the default ports is never touched), with the podman runtime:

- cold: nothing exists yet (OpenBao initialised, busybox seeded, the example built, pushed,
  pulled by podman, started, health-checked);
- warm: `shaman dev down`, then the same two commands again (state, images and the example
  app kept; a new deploy of the same image is a new release, so it rolls out again).

`scripts/install.sh` is left out: it would reinstall the project into the shared venv when
pyproject.toml changed, under the feet of everyone else's tests (about 1 s when nothing is
missing). The stack is left running for bench/restore_bench.py; `stop(home)` takes it down.

Not here: what each step costs inside `up` (its output lists the steps).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devstack.ports import free_port
from devstack.stack import DEFAULT_PORTS, StackConfig, free_port_pair

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
#: Variables that would point `up` or the example at another stack than the temporary one.
FOREIGN = ("SHAMAN_API_URL", "SHAMAN_TOKEN", "SHAMAN_REGISTRY", "NOMAD_ADDR", "NOMAD_TOKEN",
           "NOMAD_NAMESPACE", "NATS_URL", "VAULT_ADDR", "VAULT_TOKEN", "SHAMAN_HOME",
           "SHAMAN_RATE_LIMIT_PER_S", "SHAMAN_RATE_LIMIT_BURST")


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env["SHAMAN_HOME"] = str(home)
    return env


def prepare_home(home: Path) -> StackConfig:
    """A fresh home whose saved config uses free ports (podman runtime, persistent OpenBao)."""
    ports = {name: free_port() for name in DEFAULT_PORTS}
    ports["openbao"] = free_port_pair()
    ports["openbao_cluster"] = ports["openbao"] + 1
    config = StackConfig(home=home, ports=ports)
    config.save()
    return config


def _run(command: list[str], env: dict[str, str], log: Path, timeout_s: float) -> float:
    started = time.perf_counter()
    with log.open("ab") as out:
        out.write(f"\n=== {' '.join(command)}\n".encode())
        out.flush()
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                              cwd=REPO, timeout=timeout_s, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[-3:])} exited {done.returncode}:\n{tail}")
    return elapsed


def make_run(env: dict[str, str], log: Path) -> dict[str, float]:
    """`shaman dev up` then `python -m devstack.example --deploy`, timed."""
    up = _run([str(BIN / "shaman"), "dev", "up"], env, log, 600)
    example = _run([sys.executable, "-m", "devstack.example", "--deploy", "--timeout", "300"],
                   env, log, 660)
    return {"total_s": round(up + example, 2), "up_s": round(up, 2),
            "example_deploy_s": round(example, 2)}


def stop(home: Path, log: Path) -> float:
    return _run([str(BIN / "shaman"), "dev", "down"], environment(home), log, 180)


def run(work: Path) -> dict[str, Any]:
    """Cold then warm; leaves the stack running (call `stop`)."""
    home = work / "home"
    prepare_home(home)
    env = environment(home)
    log = work / "makerun.log"
    cold = make_run(env, log)
    down_s = stop(home, log)
    warm = make_run(env, log)
    return {"cold": cold, "warm": warm, "down_s": round(down_s, 2), "home": str(home),
            "log": str(log)}
