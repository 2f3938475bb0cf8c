"""The timeline contract: every event has a golden example, round-trips, and is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.events import decode_event, encode_event, event_type
from shared.events.codec import ALL_EVENT_TYPES
from shared.events.docs import render
from shared.events.examples import EXAMPLES
from shared.subjects import event_subject

ROOT = Path(__file__).resolve().parents[3]


def test_every_event_type_has_exactly_one_example() -> None:
    example_types = [event_type(e) for e in EXAMPLES]
    assert sorted(example_types) == sorted(event_type(c) for c in ALL_EVENT_TYPES)
    assert len(set(example_types)) == len(example_types)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: event_type(e))
def test_examples_round_trip_and_have_the_common_fields(example: object) -> None:
    data = encode_event(example)  # type: ignore[arg-type]
    assert decode_event(data) == example
    for field in (b'"type"', b'"app"', b'"deploy_id"', b'"time"'):
        assert field in data


def test_tags_are_stable_and_fit_subjects() -> None:
    for cls in ALL_EVENT_TYPES:
        tag = event_type(cls)
        assert event_subject("hello", tag) == f"shaman.events.hello.{tag}"


def test_docs_events_md_is_generated_from_the_code() -> None:
    assert (ROOT / "docs" / "events.md").read_text() == render(), (
        "docs/events.md is stale: run `python -m shared.events.docs`"
    )
