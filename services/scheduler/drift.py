"""Deciding whether the Nomad job was changed outside Shaman: pure rules, no I/O.

The reconciler puts the job back in every case; this only decides whether that is
*drift* worth a `drift.detected` event, or the normal roll-out of a new release, a
scale, or a change of the platform's own rendering. The rules:

- the job is stopped → drift (Shaman only stops jobs of destroyed apps);
- the job is missing although the current release was already submitted → drift;
- the job's `shaman_release` / `shaman_deploy_id` differ from the desired ones although
  the current release was already submitted → drift (someone registered another spec,
  or reverted it in Nomad);
- the job carries the desired meta *and* the same spec hash, yet Nomad's plan shows a
  diff → drift (someone edited it in place and left the meta alone).

A newer desired spec (new release, new count, new rendering) changes the spec hash, so
it is never reported as drift.
"""

from __future__ import annotations

from typing import Any

from services.scheduler.renderer import META_DEPLOY, META_RELEASE, META_SPEC


def drift_reason(
    desired: dict[str, Any],
    actual: dict[str, Any] | None,
    diff_type: str,
    *,
    submitted: bool,
) -> str | None:
    """Why the job drifted, in words for the timeline; None when it did not."""
    if actual is None:
        return "job missing from Nomad (deleted outside Shaman)" if submitted else None
    if actual.get("Stop"):
        return "job stopped outside Shaman"
    want = desired.get("Meta") or {}
    have = actual.get("Meta") or {}
    same_release = (
        have.get(META_RELEASE) == want.get(META_RELEASE)
        and have.get(META_DEPLOY) == want.get(META_DEPLOY)
    )
    if not same_release:
        if not submitted:
            return None
        found = have.get(META_RELEASE)
        what = f"release v{found}" if found else "a spec Shaman did not render"
        return f"job replaced outside Shaman (it ran {what})"
    if have.get(META_SPEC) == want.get(META_SPEC) and diff_type != "None":
        return "job edited outside Shaman"
    return None
