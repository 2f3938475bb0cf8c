"""A deploy's outcome as the CLI reports it: when it is over, and which exit code it gets.

The exit codes are a contract for scripts and CI (docs/cli.md):

| code | meaning |
|---|---|
| 0 | the deploy ended `healthy` |
| 1 | it ended `failed` (or the request itself was refused) |
| 2 | it ended `rolled_back`: the release was bad and the last good one runs again |
| 3 | it ended `superseded` or `cancelled`: a newer deploy or a person stopped it |
| 4 | the CLI gave up waiting (timeout) or lost the API; the deploy may still finish |

A deploy whose rollout failed is `failed` on its record while its automatic rollback runs,
then `rolled_back` (or stays `failed`, with both reasons) when the rollback ends
(docs/decisions/0001-deploy-flow.md); so "failed with a rollback requested and no outcome
yet" is not over, and the CLI keeps waiting.

Pure functions; no I/O.
"""

from __future__ import annotations

from typing import Any

EXIT_HEALTHY = 0
EXIT_FAILED = 1
EXIT_ROLLED_BACK = 2
EXIT_STOPPED = 3
EXIT_GAVE_UP = 4

TERMINAL_STATUSES = frozenset(
    {"healthy", "failed", "rolled_back", "superseded", "cancelled"}
)

_EXIT_CODES = {
    "healthy": EXIT_HEALTHY,
    "failed": EXIT_FAILED,
    "rolled_back": EXIT_ROLLED_BACK,
    "superseded": EXIT_STOPPED,
    "cancelled": EXIT_STOPPED,
}


def exit_code_for(status: str | None) -> int:
    """The exit code for a deploy that ended in `status`; EXIT_GAVE_UP if it has not ended."""
    if status is None:
        return EXIT_GAVE_UP
    return _EXIT_CODES.get(status, EXIT_GAVE_UP)


def rollback_pending(deploy: dict[str, Any]) -> bool:
    """Whether the deploy's automatic rollback was requested and has not ended yet."""
    rollback = deploy.get("rollback")
    return isinstance(rollback, dict) and rollback.get("outcome") is None


def is_settled(deploy: dict[str, Any]) -> bool:
    """Whether a deploy record shows its final outcome (see the module docstring)."""
    status = deploy.get("status")
    if status not in TERMINAL_STATUSES:
        return False
    return not (status == "failed" and rollback_pending(deploy))


def headline(status: str | None, release: int | None = None) -> str:
    """One line for a finished (or abandoned) deploy."""
    version = f" v{release}" if release is not None else ""
    return {
        "healthy": f"Deployed{version}: healthy",
        "failed": f"Deploy{version} failed",
        "rolled_back": f"Deploy{version} failed and was rolled back",
        "superseded": "Deploy superseded by a newer one",
        "cancelled": "Deploy cancelled",
    }.get(status or "", f"Deploy still {status or 'unknown'}")
