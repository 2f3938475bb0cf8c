"""Fixtures of the chaos scenarios: one whole stack per test module, one World per test.

- `chaos_stack` (module scope): a `ChaosStack` (stack.py) on free ports in a temp home,
  simulated localnomad runtime, small timings; a module may set `STACK_ENV = {"watcher":
  {...}}` to change its services' settings. Stopped, with everything it started, at the
  end of the module.
- `world` (per test): the recorded client, the tap, the Nomad recorder (world.py); its
  history (`<test>-history.jsonl`) and verdict (`<test>-verdict.txt`) land in
  $SHAMAN_CHAOS_ARTIFACTS or a fresh /tmp/shaman-chaos-* directory.

Scenarios marked `slow` run only with SHAMAN_CHAOS_FULL=1 (`make chaos` sets it), so that
`make test` keeps the fast ones within its time budget.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chaos.stack import ChaosStack
from tests.chaos.world import World

FULL = os.environ.get("SHAMAN_CHAOS_FULL") == "1"

#: For scenarios too long for `make test`: `make chaos` (SHAMAN_CHAOS_FULL=1) runs them.
slow = pytest.mark.skipif(not FULL, reason="slow chaos scenario; SHAMAN_CHAOS_FULL=1 runs it")


@pytest.fixture(scope="module")
def chaos_stack(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    env = getattr(request.module, "STACK_ENV", None)
    stack = ChaosStack(tmp_path_factory.mktemp("chaos"), env)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def chaos_artifacts() -> Path:
    """Where histories and verdicts go: $SHAMAN_CHAOS_ARTIFACTS, else a fresh directory
    under /tmp that outlives pytest's own temp-dir rotation (other runs share it)."""
    root = os.environ.get("SHAMAN_CHAOS_ARTIFACTS")
    if root:
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="shaman-chaos-"))


@pytest.fixture
async def world(chaos_stack: ChaosStack, chaos_artifacts: Path,
                request: pytest.FixtureRequest) -> AsyncIterator[World]:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:100]
    async with World(chaos_stack, chaos_artifacts, name=name) as w:
        yield w
