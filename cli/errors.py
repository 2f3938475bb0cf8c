"""The failures the CLI reports: each one line (or a few) and an exit code.

`ApiError` is an error answer from the API (its `{"error": {"code", "message",
"details"}}`); `ApiUnreachable` is no answer at all (exit 4, like a deploy the CLI gave up
waiting for); `SettingsError` is missing configuration (no token, no app name).
"""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """A failure the CLI reports in one line and maps to an exit code."""

    exit_code = 1
    code = "error"

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self)}}


class SettingsError(CliError):
    """Something the CLI needs is not configured; the message says how to configure it."""

    code = "not_configured"


class ApiError(CliError):
    """The API answered with an error status."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after_s = retry_after_s

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class ApiUnreachable(CliError):
    """No answer from the API: refused, timed out, or the connection dropped."""

    exit_code = 4

    def __init__(self, message: str, code: str = "unreachable") -> None:
        super().__init__(message)
        self.code = code


class ConnectionDropped(ApiUnreachable):
    """The connection broke after it was made (worth a retry for idempotent calls)."""

    def __init__(self, api_url: str, cause: str) -> None:
        super().__init__(
            f"the Shaman API at {api_url} closed the connection ({cause})",
            code="connection_dropped",
        )


def unreachable_message(api_url: str) -> str:
    return f"cannot reach the Shaman API at {api_url}: is the stack running? (make run)"


class UsageProblem(CliError):
    """The command line asks for something the CLI will not do (e.g. a secret in argv)."""

    code = "usage"
