"""Blanking secrets in what a failed task said before it goes onto the timeline (pure).

A rollout's explanation (explain.py) copies text that comes from the task: its log lines
and its health check's output (the app's own words), and its task events (Nomad's words,
which can quote the app). A `Redactor` says what to do with each:

- the app's secret values, read from Vault for the release that failed
  (secret_values.py), are replaced by `[REDACTED]` wherever they occur, in the app's
  words and in Nomad's;
- in the app's words, text shaped like a credential (`NAME=value` for credential-like
  names, bearer tokens, passwords in URLs) is replaced too, so a secret that is not one
  of the app's (a value the app made up or read elsewhere) is still caught when it is
  labelled;
- when the values could not be read, the app's words are withheld altogether (a value
  printed without a label would otherwise go out as it is); Nomad's words are kept.

Values shorter than `MIN_SECRET_LEN` are not substituted: "on", "1" or "dev" would blank
ordinary words all over the text while protecting nothing worth protecting. Only the
value as stored is recognised, not an encoding of it (base64, URL or JSON escaping).

Not here: reading the values (secret_values.py) or deciding which text goes where
(explain.py). A Redactor's repr never shows a value, and nothing here logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

REDACTED = "[REDACTED]"
WITHHELD = "[WITHHELD: the app's secret values could not be read to blank them]"
MIN_SECRET_LEN = 4

# An app that prints its own credentials would otherwise have them copied onto the
# timeline: `NAME=value` / `"name": value` for credential-like names, bearer tokens,
# URL passwords. Applied to the app's words only: Nomad's own messages say "secret: ..."
# in ways this would mangle.
_CREDENTIAL = re.compile(
    r"""(?i)(\b[\w.-]*(?:token|passw(?:or)?d|secret|api[_-]?key|private[_-]?key|credential)"""
    r"""[\w.-]*["']?\s*[:=]\s*)("[^"]*"|'[^']*'|\S+)"""
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+@")


def scrub(line: str) -> str:
    """Blank what looks like a credential in one line of the app's output."""
    line = _CREDENTIAL.sub(lambda m: m.group(1) + REDACTED, line)
    line = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", line)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", line)


def substitutable(values: Iterable[str]) -> tuple[str, ...]:
    """The strings to look for: each value and each line of a multi-line one (a PEM key
    printed as it is spans log lines), at least MIN_SECRET_LEN long, longest first."""
    found: set[str] = set()
    for value in values:
        # Stripped too: log lines lose their trailing blanks before they are looked at.
        for piece in {value, value.strip(), *(line.strip() for line in value.splitlines())}:
            if len(piece) >= MIN_SECRET_LEN:
                found.add(piece)
    return tuple(sorted(found, key=lambda v: (-len(v), v)))


def blank_values(text: str, values: tuple[str, ...]) -> str:
    """`text` with every occurrence of every value replaced by one REDACTED.

    All occurrences are found in the original text first (overlapping ones included) and
    merged: a value inside a longer one, two values that overlap or touch, all become a
    single marker, so no fragment of either survives and a value is never looked for
    inside a marker that replaced another.
    """
    if not values or not text:
        return text
    spans: list[tuple[int, int]] = []
    for value in values:
        start = text.find(value)
        while start != -1:
            spans.append((start, start + len(value)))
            start = text.find(value, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    kept_from = 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s <= end:
            end = max(end, e)
            continue
        out += [text[kept_from:start], REDACTED]
        kept_from, start, end = end, s, e
    out += [text[kept_from:start], REDACTED, text[end:]]
    return "".join(out)


@dataclass(frozen=True, repr=False)
class Redactor:
    """What to blank in one explanation. Build with `for_values`, or use a constant."""

    values: tuple[str, ...] = ()  # substitutable(): filtered and ordered
    withhold_app_output: bool = False  # the values are unknown: leave the app's words out
    leave_out_nomad_text: bool = False  # nothing read yet: leave Nomad's words out too

    @classmethod
    def for_values(cls, values: Iterable[str]) -> Redactor:
        return cls(values=substitutable(values))

    def __repr__(self) -> str:
        return (f"Redactor({len(self.values)} values, withhold_app_output="
                f"{self.withhold_app_output}, leave_out_nomad_text={self.leave_out_nomad_text})")

    def nomad_text(self, text: str) -> str:
        """A task event's or an allocation's text: values blanked ("" when left out)."""
        if self.leave_out_nomad_text:
            return ""
        return blank_values(text, self.values)

    def app_output(self, text: str) -> str:
        """A line the app wrote (log, check output): values and credential shapes blanked,
        or WITHHELD when the values are unknown."""
        if self.withhold_app_output:
            return WITHHELD
        return scrub(blank_values(text, self.values))


# Nothing to look for: the release has no secrets (or the caller knows none).
SHAPES_ONLY = Redactor()
# The release has secrets whose values could not be read.
VALUES_UNKNOWN = Redactor(withhold_app_output=True)
# Before anything was read (the reason written with the outcome, the log lines about it):
# only Shaman's own words and the facts of the events (kinds, exit codes, counts).
TASK_TEXT_LEFT_OUT = Redactor(withhold_app_output=True, leave_out_nomad_text=True)
