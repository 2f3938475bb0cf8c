"""Secret values never survive the scrubber, in plain, Basic-auth or URL form."""

from __future__ import annotations

import base64

from services.builder.scrub import REDACTED, Scrubber


def test_values_and_basic_auth_forms_are_removed() -> None:
    scrubber = Scrubber()
    scrubber.add_credential("deploy", "s3cr3t-token")
    basic = base64.b64encode(b"deploy:s3cr3t-token").decode()
    text = f"token s3cr3t-token and Authorization: Basic {basic}"
    out = scrubber.scrub(text)
    assert "s3cr3t-token" not in out and basic not in out
    assert out.count(REDACTED) == 2


def test_url_userinfo_is_removed_even_for_unknown_values() -> None:
    out = Scrubber().scrub("fatal: unable to access 'https://bob:hunter2@git.example/x.git/'")
    assert "hunter2" not in out and "bob" not in out
    assert "https://[REDACTED]@git.example/x.git/" in out


def test_longest_secret_wins_and_short_values_are_ignored() -> None:
    scrubber = Scrubber(["abcd", "abcdefgh", "ab"])
    assert scrubber.scrub("abcdefgh abcd ab") == f"{REDACTED} {REDACTED} ab"
