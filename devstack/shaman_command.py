"""The `shaman` console script: the CLI's app plus the devstack's `dev` group.

It lives in devstack because the layers allow devstack to import cli and never the other way
round; the user-facing commands stay in cli/ and know nothing about the dev stack.
"""

from __future__ import annotations

from cli.main import app
from devstack.cli import dev_app

app.add_typer(dev_app, name="dev")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
