"""A parser for OCI image references: `[registry[:port]/]repository[:tag][@sha256:<hex>]`.

It follows the grammar of the distribution project's `reference` package (the one
Docker, Podman and Nomad's docker driver use) closely enough to reject what they
would reject, so a bad reference fails at the API with a field error instead of at
image pull time on a Nomad client. It does not contact any registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?$")
_IPV6_DOMAIN = re.compile(r"^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_NAME_LENGTH = 255
DEFAULT_REGISTRY = "docker.io"


class InvalidImageReference(ValueError):
    """The reference does not parse; the message says which part is wrong (never echoes it)."""


@dataclass(frozen=True)
class ImageReference:
    registry: str | None  # None: the runtime's default registry (docker.io)
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_image_reference(ref: str) -> ImageReference:
    if not ref or ref != ref.strip() or any(c.isspace() for c in ref):
        raise InvalidImageReference("must be a non-empty image reference without spaces")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidImageReference("digest must look like sha256:<64 lowercase hex digits>")
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidImageReference(
                "tag must be 1-128 characters of letters, digits, '_', '.' or '-'"
            )
    if not rest:
        raise InvalidImageReference("repository name is missing")
    registry = None
    parts = rest.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost" or
                           first.startswith("[")):
        registry = first
        parts = parts[1:]
        if not (_DOMAIN.match(registry) or _IPV6_DOMAIN.match(registry)):
            raise InvalidImageReference(
                "registry must be a host name or address with an optional port"
            )
        port = registry.rsplit(":", 1)[1] if registry.count(":") == 1 else None
        if port is not None and not 0 < int(port) < 65536:
            raise InvalidImageReference("registry port must be between 1 and 65535")
    for part in parts:
        if not _PATH_COMPONENT.match(part):
            raise InvalidImageReference(
                "repository path components must be lowercase letters and digits, "
                "separated by '.', '_', '__' or '-'"
            )
    repository = "/".join(parts)
    if len(repository) + (len(registry) + 1 if registry else 0) > MAX_NAME_LENGTH:
        raise InvalidImageReference(f"repository name must be at most {MAX_NAME_LENGTH} characters")
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)


def registry_of(ref: ImageReference) -> str:
    return ref.registry or DEFAULT_REGISTRY
