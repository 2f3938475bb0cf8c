"""The image reference parser: what Docker/Podman accept, and clear refusals otherwise."""

from __future__ import annotations

import pytest

from services.api.image_ref import InvalidImageReference, parse_image_reference, registry_of

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("ref", "registry", "repo", "tag", "digest"), [
    ("nginx", None, "nginx", None, None),
    ("nginx:1.25", None, "nginx", "1.25", None),
    ("library/nginx:latest", None, "library/nginx", "latest", None),
    ("127.0.0.1:5000/hello:v1", "127.0.0.1:5000", "hello", "v1", None),
    ("localhost/app", "localhost", "app", None, None),
    ("ghcr.io/org/team/app:1.0.0-rc.1", "ghcr.io", "org/team/app", "1.0.0-rc.1", None),
    (f"r.example.com/app@{DIGEST}", "r.example.com", "app", None, DIGEST),
    (f"r.example.com/app:v2@{DIGEST}", "r.example.com", "app", "v2", DIGEST),
    ("my_repo/a__b/c-d.e", None, "my_repo/a__b/c-d.e", None, None),
    ("[::1]:5000/x", "[::1]:5000", "x", None, None),
])
def test_valid(ref: str, registry: str | None, repo: str, tag: str | None,
               digest: str | None) -> None:
    parsed = parse_image_reference(ref)
    assert (parsed.registry, parsed.repository, parsed.tag, parsed.digest) == (
        registry, repo, tag, digest)
    assert str(parsed) == ref


@pytest.mark.parametrize("ref", [
    "", " nginx", "nginx ", "ng inx", "NGINX", "nginx:", ":tag", "nginx@sha256:abc",
    "nginx@md5:" + "a" * 32, "a/-b", "a//b", "r.example.com:99999/x", "a/b:" + "t" * 129,
    "nginx:bad/tag", "x" * 256,
])
def test_invalid(ref: str) -> None:
    with pytest.raises(InvalidImageReference) as info:
        parse_image_reference(ref)
    if ref.strip():
        assert ref.strip() not in str(info.value) or len(ref.strip()) < 3


def test_default_registry() -> None:
    assert registry_of(parse_image_reference("nginx")) == "docker.io"
    assert registry_of(parse_image_reference("q.io/x")) == "q.io"
