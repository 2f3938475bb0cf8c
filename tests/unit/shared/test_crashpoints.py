"""shared.crashpoints and the services' point sets bound to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.api import crashpoints as api_points
from services.builder import crashpoints as builder_points
from services.scheduler import crashpoints as scheduler_points
from shared.crashpoints import EXIT_CODE, Crashpoints
from shared.settings import (
    ApiSettings,
    BuilderSettings,
    CommonSettings,
    SchedulerSettings,
    WatcherSettings,
)


def test_an_unarmed_point_does_nothing() -> None:
    points = Crashpoints({"a", "b"})
    points.reach("a")
    points.reach("not-even-known")  # unarmed: the name is not looked at


def test_arming_an_unknown_point_fails_at_once() -> None:
    with pytest.raises(ValueError, match="unknown crashpoint 'c'"):
        Crashpoints({"a", "b"}, "c")


def test_reaching_a_point_missing_from_the_known_set_is_a_bug_once_armed() -> None:
    points = Crashpoints({"a", "b"}, "a")
    points.reach("b")  # known, not armed: goes on
    with pytest.raises(ValueError, match="'typo' is not in the known set"):
        points.reach("typo")


def test_the_armed_point_exits_137_after_one_line_on_stderr() -> None:
    code = ("from shared.crashpoints import Crashpoints\n"
            "p = Crashpoints({'a', 'b'}, 'b')\n"
            "p.reach('a')\n"
            "print('before', flush=True)\n"
            "p.reach('b')\n"
            "print('after', flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                          check=False, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == EXIT_CODE == 137
    assert done.stdout.decode().split() == ["before"]
    assert done.stderr.decode() == "crashpoint b reached: exiting with 137\n"


@pytest.mark.parametrize(("module", "points"), [
    (scheduler_points,
     {"after_release_created", "after_app_updated", "after_nomad_register"}),
    (builder_points, {"after_build_recorded", "after_release_command"}),
    (api_points, {"after_deploy_record", "after_publish"}),
])
def test_each_service_binds_its_own_points(module: object, points: set[str]) -> None:
    bound = module.Crashpoints  # type: ignore[attr-defined]
    assert points == module.KNOWN  # type: ignore[attr-defined]
    assert bound().armed == ""
    for point in points:
        assert bound(point).armed == point
    with pytest.raises(ValueError):
        bound("after_outcome")  # the watcher's: no other service knows it


@pytest.mark.parametrize("settings", [ApiSettings, BuilderSettings, SchedulerSettings,
                                      WatcherSettings])
def test_every_service_reads_SHAMAN_CRASHPOINT(
    settings: type[CommonSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHAMAN_CRASHPOINT", "after_publish")
    assert settings.model_validate({}).crashpoint == "after_publish"
    monkeypatch.delenv("SHAMAN_CRASHPOINT")
    assert settings.model_validate({}).crashpoint == ""
