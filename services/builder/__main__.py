"""`shaman-builder`: run the builder service until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.builder.app import create_app
from shared.service import run_service
from shared.settings import BuilderSettings


def main() -> int:
    return run_service("builder", create_app, BuilderSettings())  # type: ignore[call-arg]  # fields come from the environment


if __name__ == "__main__":
    sys.exit(main())
