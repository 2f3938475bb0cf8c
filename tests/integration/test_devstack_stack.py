"""The whole dev stack as `make run` starts it: every component healthy, wired to each other,
and `python -m devstack.example --deploy` (the second half of `make run`) ending with the
example app answering on the URL it prints.

Uses the session's `shaman_stack` (tests/conftest.py): the same supervisor code as
`shaman dev up`, on free ports in a temp SHAMAN_HOME, localnomad with real podman containers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devstack.components.base import http_request
from devstack.stack import ALL_COMPONENTS, Stack

if TYPE_CHECKING:
    from tests.conftest import ShamanStack

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.podman]


def test_every_component_is_up_and_healthy(shaman_stack: ShamanStack) -> None:
    rows = Stack(shaman_stack.config).status()
    assert [row.name for row in rows] == list(ALL_COMPONENTS)
    unhealthy = [(row.name, str(row.log_path)) for row in rows if not row.healthy]
    assert not unhealthy


def test_the_api_takes_the_admin_token_from_the_devstack(shaman_stack: ShamanStack) -> None:
    anonymous = http_request(f"{shaman_stack.api_url}/v1/apps")
    assert anonymous is not None and anonymous.status == 401
    admin = http_request(
        f"{shaman_stack.api_url}/v1/apps",
        headers={"Authorization": f"Bearer {shaman_stack.admin_token}"},
    )
    assert admin is not None and admin.status == 200


def test_make_run_deploy_step_ends_with_the_app_answering(shaman_stack: ShamanStack) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SHAMAN_", "NOMAD_"))},
        "SHAMAN_HOME": str(shaman_stack.config.home),
    }
    done = subprocess.run(
        [sys.executable, "-m", "devstack.example", "--deploy", "--timeout", "240"],
        env=env, capture_output=True, text=True, timeout=280, cwd=REPO,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    match = re.search(r"App:\s+(http://\S+)", out)
    assert match, out
    page = http_request(match.group(1))
    assert page is not None and page.status == 200
    assert "Hello from Shaman" in page.body.decode()
    assert shaman_stack.api_url in out
    assert "make stop" in out
