"""Exit codes from deploy outcomes, and when a deploy counts as over."""

from __future__ import annotations

import pytest

from cli.outcome import exit_code_for, headline, is_settled


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("healthy", 0),
        ("failed", 1),
        ("rolled_back", 2),
        ("superseded", 3),
        ("cancelled", 3),
        ("pending", 4),
        ("building", 4),
        ("deploying", 4),
        (None, 4),
        ("some-future-status", 4),
    ],
)
def test_exit_codes(status: str | None, code: int) -> None:
    assert exit_code_for(status) == code


@pytest.mark.parametrize("status", ["healthy", "rolled_back", "superseded", "cancelled"])
def test_terminal_statuses_are_settled(status: str) -> None:
    assert is_settled({"status": status})


@pytest.mark.parametrize("status", ["pending", "building", "deploying"])
def test_running_statuses_are_not(status: str) -> None:
    assert not is_settled({"status": status})


def test_failed_with_its_rollback_still_running_is_not_over() -> None:
    rollback = {"requested_at": "2026-11-28T09:30:00Z", "reason": "exit 1", "outcome": None}
    assert not is_settled({"status": "failed", "rollback": rollback})


def test_failed_after_its_rollback_failed_too_is_over() -> None:
    rollback = {"requested_at": "2026-11-28T09:30:00Z", "reason": "exit 1", "outcome": "failed"}
    assert is_settled({"status": "failed", "rollback": rollback})
    assert is_settled({"status": "failed", "rollback": None})


def test_headlines_name_the_release() -> None:
    assert headline("healthy", 7) == "Deployed v7: healthy"
    assert headline("rolled_back", 3) == "Deploy v3 failed and was rolled back"
    assert headline("deploying") == "Deploy still deploying"
