"""buildah command lines for this builder, and reading its output for the failing step.

The builder's containers storage is shared.containers.ContainerStorage: `--root/--runroot/
--storage-driver` and a containers.conf without default ulimits (these VMs cannot raise
limits; see the handbook's environment.md). Every build runs with `--isolation chroot`
(no daemon, no runtime needed), `--layers` (cache reused across builds of an app) and
`--timestamp 0` (same input, same image digest: a redelivered build pushes the same thing
under the same name).

`StepTracker` follows buildah's `STEP n/m: INSTRUCTION` lines so a failure names its step.
This module builds argv lists and parses text; it runs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from shared.containers import ContainerStorage

# The builder's children never inherit Vault or Nomad credentials.
CREDENTIAL_PREFIXES = ("VAULT_", "NOMAD_")


def builder_env(
    storage: ContainerStorage, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of buildah and git: the builder's own, minus credentials."""
    env = storage.env(drop_prefixes=CREDENTIAL_PREFIXES)
    env["BUILDAH_ISOLATION"] = "chroot"
    env.update(extra or {})
    return env


def build_command(
    storage: ContainerStorage,
    *,
    context: Path,
    containerfile: Path,
    tag: str,
    build_args: Mapping[str, str],
    tls_verify: bool,
    authfile: Path | None = None,
) -> list[str]:
    args = [
        "bud", "--isolation", "chroot", "--layers", "--timestamp", "0",
        f"--tls-verify={'true' if tls_verify else 'false'}",
        "-f", str(containerfile), "-t", tag,
    ]
    if authfile is not None:
        args += ["--authfile", str(authfile)]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    args.append(str(context))
    return storage.buildah(*args)


def push_command(
    storage: ContainerStorage,
    *,
    tag: str,
    digestfile: Path,
    tls_verify: bool,
    authfile: Path | None = None,
) -> list[str]:
    args = ["push", f"--tls-verify={'true' if tls_verify else 'false'}",
            "--digestfile", str(digestfile)]
    if authfile is not None:
        args += ["--authfile", str(authfile)]
    args += [tag, f"docker://{tag}"]
    return storage.buildah(*args)


_STEP = re.compile(r"^(?:\[(\d+)/(\d+)\] )?STEP (\d+)/(\d+): (.*)$")
_FAILED_AT = re.compile(r'building at STEP "(.*)": (.*)$')
_CACHE_HIT = "--> Using cache"


class StepTracker:
    """Follows buildah's output: the step it is at, which one failed, and cache use.

    Multi-stage builds prefix steps with their stage (`[2/2] STEP 3/3: RUN …`).
    """

    def __init__(self) -> None:
        self.stage: str | None = None  # "2/2" in multi-stage builds
        self.number: int | None = None
        self.total: int | None = None
        self.instruction: str | None = None
        self.error: str | None = None
        self.steps_seen = 0
        self.from_steps = 0
        self.cache_hits = 0

    def observe(self, line: str) -> None:
        text = line.strip()
        match = _STEP.match(text)
        if match:
            stage_n, stage_m, number, total, instruction = match.groups()
            self.stage = f"{stage_n}/{stage_m}" if stage_n else None
            self.number, self.total = int(number), int(total)
            self.instruction = instruction
            self.steps_seen += 1
            if instruction.upper().startswith("FROM "):
                self.from_steps += 1
            return
        if text.startswith(_CACHE_HIT):
            self.cache_hits += 1
            return
        failed = _FAILED_AT.search(text)
        if failed:
            # buildah names the failing instruction itself; it wins over our guess.
            self.instruction = failed.group(1)
            self.error = failed.group(2)

    @property
    def step(self) -> str | None:
        """e.g. `RUN make` (for BuildFailed.step)."""
        return self.instruction

    @property
    def fully_cached(self) -> bool:
        """Every step after FROM came from the layer cache."""
        work = self.steps_seen - self.from_steps
        return work > 0 and self.cache_hits >= work

    def describe(self) -> str | None:
        """e.g. `STEP 3/4: RUN make` (with `stage 2/2 ` first in multi-stage builds)."""
        if self.instruction is None:
            return None
        if self.number is None:
            return self.instruction
        where = f"STEP {self.number}/{self.total}: {self.instruction}"
        return f"stage {self.stage} {where}" if self.stage else where


def find_containerfile(context: Path, configured: str) -> Path | None:
    """The app's configured Containerfile, or a Containerfile/Dockerfile beside it.

    The path must stay inside the context (an app setting must not read the builder's disk).
    """
    root = context.resolve()
    wanted = (root / configured).resolve()
    if not wanted.is_relative_to(root):
        return None
    candidates = [wanted]
    for name in ("Containerfile", "Dockerfile"):
        candidate = (wanted.parent / name).resolve()
        if candidate not in candidates:
            candidates.append(candidate)
    for candidate in candidates:
        if candidate.is_relative_to(root) and candidate.is_file():
            return candidate
    return None
