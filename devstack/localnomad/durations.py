"""Go-style durations: parsing `?wait=30s` and formatting `5m0s` in Nomad's messages.

Nomad encodes durations as int64 nanoseconds on the wire, but its query parameters
(`wait`) take Go duration strings and its human messages print `time.Duration.String()`.
This module covers exactly those two conversions; nothing else.
"""

from __future__ import annotations

import re

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000
MINUTE = 60 * S
HOUR = 60 * MINUTE

_UNITS = {"ns": NS, "us": US, "µs": US, "ms": MS, "s": S, "m": MINUTE, "h": HOUR}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """`1m30s` -> nanoseconds. Raises ValueError like Go's time.ParseDuration would fail."""
    s = text.strip()
    if s in ("0", ""):
        if s == "":
            raise ValueError("empty duration")
        return 0
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * int(total)


def _fmt_frac(value: int, unit: int) -> str:
    whole, rem = divmod(value, unit)
    if rem == 0:
        return str(whole)
    digits = len(str(unit)) - 1
    frac = str(rem).rjust(digits, "0").rstrip("0")
    return f"{whole}.{frac}"


def format_go_duration(ns: int) -> str:
    """Nanoseconds -> Go's Duration.String(): `10s`, `5m0s`, `1h0m0s`, `200ms`, `1.5s`."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < S:
        if ns < US:
            out = f"{ns}ns"
        elif ns < MS:
            out = f"{_fmt_frac(ns, US)}µs"
        else:
            out = f"{_fmt_frac(ns, MS)}ms"
    else:
        hours, rem = divmod(ns, HOUR)
        minutes, rem = divmod(rem, MINUTE)
        secs = _fmt_frac(rem, S) + "s"
        if hours:
            out = f"{hours}h{minutes}m{secs}"
        elif minutes:
            out = f"{minutes}m{secs}"
        else:
            out = secs
    return ("-" if neg else "") + out
