"""Removing secret values from text before it leaves the builder process.

Build output can echo anything a build step prints, and git or a registry may repeat a
URL with credentials in it. Every log line, event, stored log and failure reason the
builder writes goes through one `Scrubber` that knows the credential values this build
used (and their base64 forms, as they appear in Basic auth headers), plus a pattern for
`scheme://user:password@` in URLs.

It is a filter on text the builder already has; it does not fetch secrets. The builder
never reads the app's own secrets, so they cannot reach a build log through it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
# Shorter values would shred ordinary output ("a", "ok") and are not credentials anyone
# should use; they are still never logged by the builder itself.
MIN_SECRET_LENGTH = 4
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


class Scrubber:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        self._secrets.add(secret)
        self._pattern = None

    def add_credential(self, username: str, password: str) -> None:
        """A username/password pair: the password, and the Basic-auth forms of the pair."""
        self.add(password)
        pair = f"{username}:{password}".encode()
        self.add(base64.b64encode(pair).decode())
        self.add(base64.urlsafe_b64encode(pair).decode())

    def scrub(self, text: str) -> str:
        if self._secrets:
            if self._pattern is None:
                # Longest first, so a secret containing another is replaced whole.
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
            text = self._pattern.sub(REDACTED, text)
        return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
