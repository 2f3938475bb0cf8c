"""Every documented event type reads as one useful line; failures explain themselves."""

from __future__ import annotations

import json

import pytest

from cli.errors import ApiError
from cli.output import detail_lines, error_lines
from cli.timeline import describe, event_line, failure_details
from shared.events import encode_event
from shared.events.examples import EXAMPLES

GOLDEN = [json.loads(encode_event(example)) for example in EXAMPLES]


@pytest.mark.parametrize("event", GOLDEN, ids=[e["type"] for e in GOLDEN])
def test_every_golden_example_has_a_line(event: dict[str, object]) -> None:
    line = describe(event)
    assert line
    assert not line.startswith(str(event["type"]))  # a sentence, not the raw fallback


def test_key_facts_are_in_the_lines() -> None:
    by_type = {e["type"]: e for e in GOLDEN}
    assert "v7" in describe(by_type["release.created"])
    assert "web 1/3 healthy" in describe(by_type["rollout.progress"])
    assert "exited with code 1" in describe(by_type["rollout.failed"])
    assert "STEP 1/4" in describe(by_type["build.log"])
    assert "healthy" in describe(by_type["deploy.finished"])


def test_rollout_failure_details_name_allocation_exit_code_and_log() -> None:
    failed = next(e for e in GOLDEN if e["type"] == "rollout.failed")
    text = "\n".join(failure_details(failed))
    assert "0c9b1e52" in text
    assert "exit code: 1" in text
    assert "panic: DATABASE_URL is not set" in text
    assert "Terminated: Exit Code: 1" in text


def test_build_failure_details_show_the_step_and_tail() -> None:
    failed = next(e for e in GOLDEN if e["type"] == "build.failed")
    text = "\n".join(failure_details(failed))
    assert "RUN make" in text and "No rule to make target" in text


def test_unknown_and_partial_events_never_raise() -> None:
    assert "future.thing" in describe({"type": "future.thing", "x": 1})
    assert describe({"type": "rollout.progress"})  # no groups, no release
    assert describe({}) is not None
    assert event_line({"type": "rollout.healthy", "app": "a", "time": "t", "release": 2}) == (
        "t a rollout.healthy: rollout of v2 is healthy"
    )


def test_api_errors_name_the_field() -> None:
    error = ApiError(422, "invalid", "the request is invalid",
                     [{"loc": "health.path", "msg": "must be a URL path starting with '/'"}])
    assert error_lines(error) == [
        "error: the request is invalid (invalid, HTTP 422)",
        "  health.path: must be a URL path starting with '/'",
    ]
    assert detail_lines([{"loc": ["rollout", "canaries"], "msg": "too big"}]) == [
        "rollout.canaries: too big"]
    assert detail_lines({"field": "port", "message": "out of range"}) == ["port: out of range"]
