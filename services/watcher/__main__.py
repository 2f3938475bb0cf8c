"""`shaman-watcher`: run the watcher until SIGTERM/SIGINT (shared.service.run_service)."""

from __future__ import annotations

import sys

from services.watcher.app import create_app
from shared.service import run_service
from shared.settings import WatcherSettings


def main() -> int:
    settings = WatcherSettings()  # type: ignore[call-arg]  # fields come from the environment
    return run_service("watcher", create_app, settings)


if __name__ == "__main__":
    sys.exit(main())
