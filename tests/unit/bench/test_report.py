"""The benchmark report on canned numbers: ratios, formatting, the table, valid JSON."""

from __future__ import annotations

import json
import math

from bench.__main__ import figures
from bench.report import Figure, format_value, markdown_report, markdown_table, results_json
from bench.stats import cost_ratio, pct, summary


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert pct(values, 0.5) == 51.0  # rank round(0.5 * 99) = 50 (0-based)
    assert pct(values, 0.99) == 99.0
    assert math.isnan(pct([], 0.5))
    assert summary([2.0, 1.0, 3.0]) == {"p50": 2.0, "p99": 3.0, "mean": 2.0, "max": 3.0, "n": 3}
    assert summary([])["n"] == 0


def test_cost_ratio_reads_as_times_the_reference_cost() -> None:
    # latency: 30 ms against a 10 ms floor costs three times the floor
    assert cost_ratio(30.0, 10.0, higher_is_better=False) == 3.0
    # rate: 250/s against a 1,000/s floor also costs four times the floor
    assert cost_ratio(250.0, 1000.0, higher_is_better=True) == 4.0
    # better than a baseline: below 1
    assert cost_ratio(20.0, 600.0, higher_is_better=False) == 0.03
    assert cost_ratio(0.0, 10.0, higher_is_better=False) is None
    assert cost_ratio(float("nan"), 10.0, higher_is_better=False) is None


def test_values_are_formatted_for_people() -> None:
    assert format_value(18734.2, "deploys/s") == "18,734 deploys/s"
    assert format_value(123.4, "ms") == "123 ms"
    assert format_value(12.34, "ms") == "12.3 ms"
    assert format_value(1.234, "s") == "1.23 s"
    assert format_value(0.1234, "ms") == "0.123 ms"
    assert format_value(None, "ms") == "-"
    assert format_value(float("nan"), "ms") == "-"


def test_table_has_one_row_per_figure_with_its_reference_and_ratio() -> None:
    table = markdown_table([
        Figure("a", "deploys accepted per second", "deploys/s", 500.0, 4500.0, "bare handler",
               higher_is_better=True, note="32 connections"),
        Figure("b", "builds per minute | 1 builder", "builds/min", 12.0),
    ])
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert lines[2] == ("| deploys accepted per second | 500 deploys/s | 4,500 deploys/s (floor: "
                        "bare handler) | 9.00x | 32 connections |")
    # a figure without a reference, and a pipe in a label, do not break the table
    assert lines[3] == "| builds per minute \\| 1 builder | 12.0 builds/min | - | - |  |"


def test_results_are_valid_json_without_nan() -> None:
    figs = [Figure("a", "x", "ms", float("nan"), 1.0)]
    results = results_json({"quick": True}, figs, {"e2e": {"p99": float("nan")}}, {}, {})
    text = json.dumps(results, allow_nan=False)
    assert json.loads(text)["figures"][0]["value"] is None
    assert json.loads(text)["raw"]["e2e"]["p99"] is None


def test_report_says_how_it_was_run_and_what_was_skipped() -> None:
    meta = {"command": "python -m bench", "started": "2026-01-01T00:00:00+00:00", "cpus": 2,
            "load_before": "3.0", "load_after": "4.0", "duration_s": 900}
    figs = [Figure("a", "x", "ms", 2.0, 1.0, "floor")]
    results = results_json(meta, figs, {}, {"builder": "--quick"}, {"restore": "boom"})
    text = markdown_report(results, figs)
    assert "`python -m bench`" in text and "load average 3.0 before" in text
    assert "| x | 2.00 ms | 1.00 ms (floor: floor) | 2.00x |" in text
    assert "Skipped: builder (--quick)." in text
    assert "Failed (no figures): restore: boom" in text


CANNED = {
    "accept": {
        "concurrency": 32, "seconds_per_run": 5.0, "rounds": 3,
        "deploys_per_s": {"api": 600.0, "floor": 3000.0},
        "accept_p99_ms_under_load": {"api": 120.0, "floor": 30.0},
        "sse": {"subscribers": 1000, "events_per_s": 100.0, "seconds": 5.0,
                "p99_ms": {"api": 40.0, "floor": 20.0}, "p50_ms": {"api": 8.0, "floor": 4.0},
                "delivered": {"api": 1.0, "floor": 1.0}},
    },
    "e2e": {
        "rss_idle_mb": {"api": 66.0, "watcher": 62.0}, "rss_load_mb": {"api": 70.0},
        "rss_floor_mb": 59.0,
        "control_plane": {"shaman_ms": {"p50": 60.0, "p99": 110.0, "n": 30},
                          "floor_ms": {"p50": 15.0, "p99": 30.0, "n": 30}},
        "burst": {"apps": 100, "concurrency": 20, "shaman_deploys_per_s": 10.0,
                  "floor_deploys_per_s": 40.0},
        "rollback": {"shaman_ms": {"p50": 100.0, "p99": 200.0, "n": 10},
                     "floor_ms": {"p50": 15.0, "p99": 25.0, "n": 10},
                     "poll_detect_ms": {"every_1s": {"p50": 500.0, "p99": 990.0, "n": 10},
                                        "every_5s": {"p50": 2500.0, "p99": 4900.0, "n": 0}}},
        "watcher_decode": {"decode_map_events_per_s": 30000, "decode_only_events_per_s": 33000,
                           "decode_map_line_bytes_p50": 3400},
    },
    "restore": {"shaman_s": {"p50": 17.0, "p99": 19.0, "n": 3},
                "nomad_default": {"restore_s": 640.0}},
    "localnomad": {"simulated_with_data_dir": {
        "register_to_all_running_ms": {"p50": 6.0, "p99": 11.0, "n": 200},
        "state_change_to_event_ms": {"p50": 0.5, "p99": 1.5, "idle_subscribers": 20},
        "rss_mb": 80.0, "jobs_registered": 1000}},
    "builder": {"queued_builds": 10, "builds_per_minute_1_builder": 12.0,
                "builds_per_minute_2_builders": 18.0, "cached_rebuild_s": 2.0,
                "cached_rebuild_bud_s": 0.5, "first_build_s": 4.0},
    "makerun": {"cold": {"total_s": 60.0, "up_s": 20.0, "example_deploy_s": 40.0},
                "warm": {"total_s": 25.0, "up_s": 5.0, "example_deploy_s": 20.0}},
}


def test_figures_pair_each_measurement_with_its_reference() -> None:
    by_key = {f.key: f for f in figures(CANNED)}
    assert by_key["api.deploys_per_s"].ratio == 5.0
    assert by_key["e2e.deploy_to_registered_p99_ms"].ratio == 3.67
    assert by_key["e2e.rollback_vs_poll_1s_p99_ms"].reference_kind == "baseline"
    assert "e2e.rollback_vs_poll_5s_p99_ms" not in by_key  # no samples, no row
    assert by_key["restore.crash_on_start_p50_s"].ratio == 0.03
    assert by_key["builder.builds_per_min_2"].ratio == 1.33  # 24/min would be perfect scaling
    assert by_key["localnomad.register_p50_ms"].reference_kind == "target"
    assert by_key["rss.api.idle"].value == 66.0 and by_key["rss.api.load"].value == 70.0
    assert "rss.watcher.load" not in by_key
    assert by_key["makerun.warm_s"].ratio == 2.5


def test_a_failed_phase_leaves_the_other_figures() -> None:
    keys = {f.key for f in figures({"accept": CANNED["accept"], "e2e": None})}
    assert keys == {"api.deploys_per_s", "api.sse_p99_ms"}
