"""How the CLI speaks: human text (rich) or machine JSON, and errors on stderr.

With `--json` a command prints exactly one JSON document on stdout (streams print NDJSON,
one object a line), with stable keys, and nothing else on stdout; progress and errors go
to stderr. An error in JSON mode is also one document on stdout, `{"error": {...}}`, so a
script can always parse stdout and then look at the exit code.

API errors name the field that was wrong (`health.path: must be a URL path ...`), from the
API's `details` list of `{"loc", "msg"}`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from cli.errors import ApiError, CliError


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        # highlight=False: rich must not colour numbers and paths inside log lines.
        self.console = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def text(self, message: str = "", style: str | None = None) -> None:
        """Human output on stdout; silent in JSON mode."""
        if not self.json_mode:
            self.console.print(message, style=style, markup=False)

    def note(self, message: str, style: str | None = "dim") -> None:
        """Progress a human wants to see; on stderr so stdout stays clean for pipes."""
        self.err.print(message, style=style, markup=False)

    def document(self, payload: Any) -> None:
        """The one JSON document of a command in JSON mode."""
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    def record(self, payload: Any) -> None:
        """One line of an NDJSON stream."""
        sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    def error(self, error: CliError) -> None:
        if self.json_mode:
            self.document(error.to_json())
        for line in error_lines(error):
            self.err.print(line, style="red", markup=False)


def error_lines(error: CliError) -> list[str]:
    if not isinstance(error, ApiError):
        return [f"error: {error}"]
    lines = [f"error: {error.message} ({error.code}, HTTP {error.status})"]
    lines.extend(f"  {item}" for item in detail_lines(error.details))
    return lines


def detail_lines(details: Any) -> list[str]:
    """`loc: msg` for each field problem; tolerant of other shapes of `details`."""
    if details is None:
        return []
    items = details if isinstance(details, list) else [details]
    lines: list[str] = []
    for item in items:
        if isinstance(item, dict):
            loc = item.get("loc", item.get("field", item.get("path")))
            if isinstance(loc, list | tuple):
                loc = ".".join(str(part) for part in loc)
            msg = item.get("msg", item.get("message", ""))
            if loc is not None:
                lines.append(f"{loc}: {msg}")
            else:
                lines.append(json.dumps(item, sort_keys=True, default=str))
        else:
            lines.append(str(item))
    return lines
