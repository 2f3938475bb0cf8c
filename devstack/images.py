"""Building, pushing and looking up images for the devstack, with buildah and the registry API.

Every build uses `--isolation chroot` (no daemon, works on these VMs) and the stack's own
`ContainerStorage`, so what is built here is visible to podman (and so to localnomad) without
a registry round trip. Pushes go to the local registry over plain HTTP (`--tls-verify=false`,
loopback only).

Not here: the builder service's builds (services/builder owns those); this module only serves
`shaman dev` (the seed image, the example app) and the tests.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path

from devstack.components.base import http_request
from devstack.podman import ContainerStorage

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


class ImageError(RuntimeError):
    """A build or push failed; the message says which command and ends with its output."""


def run_logged(command: list[str], env: Mapping[str, str], log_path: Path, what: str) -> None:
    """Run a command with its output appended to a log; raise ImageError with the tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {what}: {' '.join(command)}\n".encode())
        log.flush()
        done = subprocess.run(
            command, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, check=False,
        )
    if done.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()[-12:]
        raise ImageError(
            f"{what} failed (exit {done.returncode}); log: {log_path}\n" + "\n".join(lines)
        )


def manifest_exists(registry: str, repository: str, tag: str) -> bool:
    """Whether registry (host:port) serves repository:tag, asked over the registry API."""
    response = http_request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
        timeout_s=5.0,
    )
    return response is not None and response.status == 200


def build(
    storage: ContainerStorage,
    context: Path,
    tag: str,
    log_path: Path,
    build_args: Mapping[str, str] | None = None,
    containerfile: Path | None = None,
) -> None:
    """`buildah bud` a context into the shared storage as `tag`."""
    storage.prepare()
    command = storage.buildah(
        "bud", "--isolation", "chroot", "--tls-verify=false",
        # Same input, same image: no build timestamps in the layers or the config.
        "--timestamp", "0",
        "-f", str(containerfile or context / "Containerfile"),
        "-t", tag,
    )
    for key, value in (build_args or {}).items():
        command += ["--build-arg", f"{key}={value}"]
    command.append(str(context))
    run_logged(command, storage.env(), log_path, f"build {tag}")


def push(storage: ContainerStorage, tag: str, log_path: Path) -> None:
    """Push a locally built image to the registry its name starts with."""
    command = storage.buildah("push", "--tls-verify=false", tag, f"docker://{tag}")
    run_logged(command, storage.env(), log_path, f"push {tag}")


def source_digest(directory: Path) -> str:
    """A short, stable digest of a build context's files (names, modes and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        digest.update(f"{relative}\0{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]
