"""One-line release descriptions, as people read them in a release history.

"Deploy 3f2c1a9", "Set LOG_LEVEL, unset DEBUG", "Rollback to v7". Names only: a
config or secret *value* never appears in a description. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

# Past this many names a description ends with "and N more", to stay one line.
MAX_NAMES = 5


def short_digest(digest: str) -> str:
    """`sha256:3f2c1a9e…` → `3f2c1a9` (git's habit of seven characters)."""
    return digest.split(":", 1)[-1][:7]


def _names(names: Iterable[str]) -> str:
    ordered = sorted(set(names))
    if len(ordered) <= MAX_NAMES:
        return ", ".join(ordered)
    shown = ", ".join(ordered[:MAX_NAMES])
    return f"{shown} and {len(ordered) - MAX_NAMES} more"


def deploy_description(digest: str, given: str = "") -> str:
    given = given.strip()
    if given:
        return given.splitlines()[0]
    return f"Deploy {short_digest(digest)}" if digest else "Deploy"


def config_description(set_keys: Iterable[str], unset_keys: Iterable[str]) -> str:
    set_names = sorted(set(set_keys))
    unset_names = sorted(set(unset_keys) - set(set_names))
    if set_names and unset_names:
        return f"Set {_names(set_names)}, unset {_names(unset_names)}"
    if set_names:
        return f"Set {_names(set_names)}"
    if unset_names:
        return f"Unset {_names(unset_names)}"
    return "Config unchanged"


def secrets_description(keys: Iterable[str], given: str = "") -> str:
    given = given.strip()
    if given:
        return given.splitlines()[0]
    names = list(keys)
    return f"Update secrets {_names(names)}" if names else "Remove all secrets"


def rollback_description(to_version: int) -> str:
    return f"Rollback to v{to_version}"


def process_description(given: str = "") -> str:
    given = given.strip()
    return given.splitlines()[0] if given else "Change process settings"
