"""The watcher's Prometheus metrics (served on /metrics by shared.service).

Defined once at import, as prometheus_client expects; several watcher apps in one test
process share them, which only matters for their absolute values.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STREAM_CONNECTS = Counter(
    "shaman_watcher_stream_connects_total", "Subscriptions to Nomad's event stream")
STREAM_ENVELOPES = Counter(
    "shaman_watcher_stream_envelopes_total", "Event-stream envelopes received")
STREAM_EVENTS = Counter("shaman_watcher_stream_events_total", "Event-stream events received")
STREAM_REGRESSIONS = Counter(
    "shaman_watcher_stream_index_regressions_total", "Times Nomad's index went backwards")
RECONCILES = Counter(
    "shaman_watcher_reconciles_total", "Reconcile passes by result", ["result"])
RECONCILE_SECONDS = Histogram(
    "shaman_watcher_reconcile_seconds", "Duration of one reconcile pass of an app",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
OUTCOMES = Counter(
    "shaman_watcher_outcomes_total", "Deploy outcomes written by the watcher", ["status"])
ROLLBACKS = Counter(
    "shaman_watcher_rollbacks_requested_total", "Automatic rollbacks requested")
NOMAD_FAILS = Counter(
    "shaman_watcher_deployments_failed_total",
    "Nomad deployments the watcher failed itself", ["why"])
