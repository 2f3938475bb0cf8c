"""Image reference parsing follows Docker's normalisation."""

from __future__ import annotations

import pytest

from services.builder.references import InvalidReference, is_loopback, parse_image_ref

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("team/app", "docker.io", "team/app", "latest", None),
        ("127.0.0.1:5000/hello:abc", "127.0.0.1:5000", "hello", "abc", None),
        ("localhost/a/b", "localhost", "a/b", "latest", None),
        ("ghcr.io/o/r@" + DIGEST, "ghcr.io", "o/r", None, DIGEST),
        ("ghcr.io/o/r:v1@" + DIGEST, "ghcr.io", "o/r", "v1", DIGEST),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None,
               digest: str | None) -> None:
    ref = parse_image_ref(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry, repository, tag, digest)


def test_pinned_and_api_host() -> None:
    ref = parse_image_ref("busybox")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.pinned(DIGEST) == f"docker.io/library/busybox@{DIGEST}"
    assert parse_image_ref("127.0.0.1:5000/x:y").reference == "y"
    assert parse_image_ref(f"127.0.0.1:5000/x@{DIGEST}").reference == DIGEST


@pytest.mark.parametrize(
    "text", ["", "has space", "UPPER/case", "x@sha256:short", "x:bad!tag", "reg.io//x"]
)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_image_ref(text)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:5000")
    assert not is_loopback("registry.example.com:5000")
