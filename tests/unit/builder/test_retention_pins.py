"""Which digests image retention must keep."""

from __future__ import annotations

from services.builder.retention import pinned_digests
from shared.records import AppRecord, AppSpec, ReleaseRecord


def release(version: int) -> ReleaseRecord:
    return ReleaseRecord(app="a", version=version, kind="deploy", description="", created_by="",
                         deploy_id=f"d{version}", image=f"r/a@d{version}", digest=f"d{version}")


def test_last_n_current_and_last_healthy_are_kept() -> None:
    releases = [release(v) for v in (5, 1, 3, 2, 4)]
    app = AppRecord(spec=AppSpec(name="a"), current_release=5, last_healthy_release=1)
    assert pinned_digests(releases, app, keep=2) == {"d4", "d5", "d1"}
    assert pinned_digests(releases, None, keep=10) == {f"d{v}" for v in range(1, 6)}
    assert pinned_digests([], app, keep=3) == set()
