"""Image references: parse `[registry/]repository[:tag][@digest]` the way Docker does.

`busybox` means `docker.io/library/busybox:latest`; a first path component with a dot, a
colon or `localhost` is a registry host. This module parses and formats names; it does
not talk to any registry (see services.builder.registry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
# Where Docker Hub's registry API really answers.
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class InvalidReference(ValueError):
    """The text is not an image reference; the message says which part is wrong."""


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port] as written (docker.io for Docker Hub)
    repository: str  # path inside the registry, e.g. library/busybox
    tag: str | None = None
    digest: str | None = None  # sha256:...

    @property
    def name(self) -> str:
        """registry/repository, the part before `:tag` or `@digest`."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What the registry API calls the manifest: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        """`registry/repository@sha256:…`, what a release pins."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def host_of(registry: str) -> str:
    """The host part of `host[:port]` (IPv6 brackets kept)."""
    if registry.startswith("["):
        return registry.split("]", 1)[0] + "]"
    return registry.rsplit(":", 1)[0] if ":" in registry else registry


def is_loopback(registry: str) -> bool:
    return host_of(registry) in LOOPBACK_HOSTS


def parse_image_ref(text: str) -> ImageRef:
    """Parse an image reference; raise InvalidReference naming the bad part."""
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise InvalidReference("an image reference must be non-empty and contain no spaces")
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidReference("the digest must look like sha256:<64 hex digits>")
    tag: str | None = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference("the tag may only contain letters, digits, '_', '.' and '-'")
    parts = text.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry = first
        path = parts[1:]
        if not _HOST.match(registry):
            raise InvalidReference("the registry host is not a valid host[:port]")
    else:
        registry = DOCKER_HUB
        path = parts
        if len(path) == 1:
            path = ["library", *path]
    for component in path:
        if not _COMPONENT.match(component):
            raise InvalidReference(
                "repository path components must be lower-case letters, digits and separators"
            )
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry, repository="/".join(path), tag=tag, digest=digest)
