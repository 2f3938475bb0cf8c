"""The builder's Prometheus metrics (served on /metrics by shared.service).

Module-level because prometheus_client's registry is process-wide: two builder apps in
one test process share them, which is what a scrape of that process should show.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BUILDS = Counter(
    "shaman_builder_builds_total",
    "Builds finished by this builder, by outcome "
    "(succeeded, failed, superseded, timed_out, skipped, retried).",
    ["outcome"],
)
BUILD_SECONDS = Histogram(
    "shaman_builder_build_seconds",
    "Wall time of builds that reached an outcome, fetch and push included.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200),
)
RUNNING = Gauge("shaman_builder_builds_running", "Builds running in this process now.")
IMAGES_DELETED = Counter(
    "shaman_builder_images_deleted_total", "Images deleted from the registry by retention."
)
