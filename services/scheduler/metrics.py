"""The scheduler's Prometheus metrics (served on /metrics by shared.service).

Defined once per process, as prometheus_client expects; labels are bounded sets
(outcomes, kinds), never app names or ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_PASSES = Counter(
    "shaman_scheduler_reconcile_passes_total",
    "Reconcile passes by outcome (unchanged, created, updated, deregistered, idle, error).",
    ["outcome"],
)
RECONCILE_SECONDS = Histogram(
    "shaman_scheduler_reconcile_seconds",
    "Duration of one reconcile pass, Nomad calls included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RELEASES_CREATED = Counter(
    "shaman_scheduler_releases_created_total", "Releases created, by kind.", ["kind"]
)
DRIFT_DETECTED = Counter(
    "shaman_scheduler_drift_detected_total", "Nomad jobs put back after a change outside Shaman."
)
DEPLOYS_FAILED = Counter(
    "shaman_scheduler_deploys_failed_total", "Deploys the scheduler ended as failed, by cause.",
    ["cause"],
)
QUEUE_DEPTH = Gauge("shaman_scheduler_queue_depth", "Apps waiting for a reconcile pass.")
STUCK_DEPLOYS = Gauge(
    "shaman_scheduler_stuck_deploys",
    "Deploys pending or building for longer than stuck_deploy_after_s (last sweep).",
)
