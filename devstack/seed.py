"""Seed the local registry with the offline base image `<registry>/library/busybox:stable`.

No public registry is reachable here, so every image the devstack builds starts from this
one: `FROM scratch` plus Debian's static `/bin/busybox` and its applet symlinks (`sh`,
`httpd`, `wget`, ...), a minimal /etc/passwd and a world-writable /tmp. It is built with
buildah and `--timestamp 0`, so its digest is the same on every machine with the same
busybox-static, and pushed once: a registry that already has the tag is left alone.

Not here: any other base image (debootstrap could build a Debian one; nothing needs it yet).

    python -m devstack.seed [--registry HOST:PORT]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from devstack.images import ImageError, build, manifest_exists, push
from devstack.podman import ContainerStorage

REPOSITORY = "library/busybox"
TAG = "stable"

CONTAINERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY passwd group /etc/
RUN ["/bin/busybox", "sh", "-c", \
     "/bin/busybox --install -s /bin && mkdir -p /tmp /root /var/www && chmod 1777 /tmp"]
CMD ["/bin/sh"]
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def busybox_binary() -> Path:
    """Debian busybox-static's binary; the dynamic `busybox` package would not run FROM scratch."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.exists():
            return candidate
    raise ImageError("busybox is not installed (Debian package busybox-static)")


def busybox_ref(registry: str) -> str:
    return f"{registry}/{REPOSITORY}:{TAG}"


def ensure_busybox(registry: str, storage: ContainerStorage, log_path: Path) -> str:
    """Build and push the busybox base image unless the registry has it; return what it did."""
    if manifest_exists(registry, REPOSITORY, TAG):
        return "already present"
    ref = busybox_ref(registry)
    with tempfile.TemporaryDirectory(prefix="shaman-seed-") as tmp:
        context = Path(tmp)
        shutil.copy2(busybox_binary(), context / "busybox")
        (context / "passwd").write_text(PASSWD)
        (context / "group").write_text(GROUP)
        (context / "Containerfile").write_text(CONTAINERFILE)
        build(storage, context, ref, log_path)
    push(storage, ref, log_path)
    return "pushed"


def main(argv: list[str] | None = None) -> int:
    from devstack.stack import StackConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", help="host:port (default: the dev stack's registry)")
    args = parser.parse_args(argv)
    config = StackConfig.load()
    registry = args.registry or config.registry
    log_path = config.home / "logs" / "seed.log"
    try:
        outcome = ensure_busybox(registry, config.storage, log_path)
    except ImageError as error:
        print(f"seed: {error}", file=sys.stderr)
        return 1
    print(f"seed: {busybox_ref(registry)} {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
