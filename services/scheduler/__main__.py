"""`shaman-scheduler`: load settings from the environment, run until SIGTERM, drain."""

from __future__ import annotations

import sys

from services.scheduler.app import create_app
from shared.service import run_service
from shared.settings import SchedulerSettings


def main() -> int:
    # Every field has a default or comes from the environment (pydantic-settings).
    return run_service("scheduler", create_app, SchedulerSettings())  # type: ignore[call-arg]


if __name__ == "__main__":
    sys.exit(main())
