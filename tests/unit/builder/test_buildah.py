"""buildah command lines, the failing-step tracker and Containerfile lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.builder.buildah import (
    StepTracker,
    build_command,
    builder_env,
    find_containerfile,
    push_command,
)
from shared.containers import ContainerStorage


def test_build_and_push_commands_use_our_storage_and_flags(tmp_path: Path) -> None:
    storage = ContainerStorage(tmp_path)
    argv = build_command(storage, context=tmp_path / "src", containerfile=tmp_path / "src/C",
                         tag="r:5000/app:abc", build_args={"REGISTRY": "r:5000"},
                         tls_verify=False)
    assert argv[:7] == ["buildah", "--root", str(tmp_path / "root"), "--runroot",
                        str(tmp_path / "run"), "--storage-driver", "overlay"]
    for flag in ("--isolation", "chroot", "--layers", "--tls-verify=false", "REGISTRY=r:5000"):
        assert flag in argv
    push = push_command(storage, tag="r:5000/app:abc", digestfile=tmp_path / "d",
                        tls_verify=True)
    assert push[-2:] == ["r:5000/app:abc", "docker://r:5000/app:abc"]
    assert "--tls-verify=true" in push and "--digestfile" in push


def test_builder_env_points_at_its_containers_conf_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.not-for-children")
    monkeypatch.setenv("NOMAD_TOKEN", "not-for-children")
    storage = ContainerStorage(tmp_path).prepare()
    env = builder_env(storage)
    assert env["CONTAINERS_CONF"] == str(tmp_path / "containers.conf")
    assert "default_ulimits = []" in (tmp_path / "containers.conf").read_text()
    assert not any(key.startswith(("VAULT_", "NOMAD_")) for key in env)


def test_step_tracker_names_the_failing_step() -> None:
    tracker = StepTracker()
    for line in [
        "STEP 1/4: FROM r/library/busybox:stable",
        "STEP 2/4: RUN echo ok",
        "ok",
        "STEP 3/4: RUN make && exit 3",
        "subprocess exited with status 3",
        'Error: building at STEP "RUN make && exit 3": exit status 3',
    ]:
        tracker.observe(line)
    assert tracker.step == "RUN make && exit 3"
    assert tracker.describe() == "STEP 3/4: RUN make && exit 3"
    assert tracker.error == "exit status 3"


def test_find_containerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert find_containerfile(tmp_path, "Containerfile") == (tmp_path / "Dockerfile").resolve()
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "Web.containerfile").write_text("FROM scratch\n")
    assert find_containerfile(tmp_path, "deploy/Web.containerfile") == (
        tmp_path / "deploy/Web.containerfile").resolve()
    assert find_containerfile(tmp_path, "../../etc/passwd") is None
    assert find_containerfile(tmp_path / "deploy", "Containerfile") is None


def test_step_tracker_multi_stage_and_cache() -> None:
    tracker = StepTracker()
    for line in [
        "[1/2] STEP 1/2: FROM r/busybox AS b",
        "[1/2] STEP 2/2: RUN echo one > /x",
        "--> Using cache 57a3",
        "[2/2] STEP 1/3: FROM r/busybox",
        "[2/2] STEP 2/3: COPY --from=b /x /x",
        "--> Using cache 73f7",
        "[2/2] STEP 3/3: RUN exit 4",
        'Error: building at STEP "RUN exit 4": exit status 4',
    ]:
        tracker.observe(line)
    assert tracker.describe() == "stage 2/2 STEP 3/3: RUN exit 4"
    assert not tracker.fully_cached  # the last RUN ran
    cached = StepTracker()
    for line in ["STEP 1/2: FROM r/b", "STEP 2/2: COPY a /a", "--> Using cache 1"]:
        cached.observe(line)
    assert cached.fully_cached
