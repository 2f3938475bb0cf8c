"""`shaman-api`: run the api service until SIGTERM/SIGINT."""

from __future__ import annotations

from services.api.app import create_app
from shared.service import run_service
from shared.settings import ApiSettings


def main() -> int:
    return run_service("api", create_app, ApiSettings())  # type: ignore[call-arg]  # from the environment


if __name__ == "__main__":
    raise SystemExit(main())
