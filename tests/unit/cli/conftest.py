"""Every CLI unit test runs with no Shaman configured: no env vars, an empty config dir."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cli_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Not the test's own tmp_path: tests build source trees there and list what is in it.
    for name in ("SHAMAN_API_URL", "SHAMAN_TOKEN", "SHAMAN_APP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
