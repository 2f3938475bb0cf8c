"""Source checks and safe tarball extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from services.builder.sources import (
    SourceError,
    check_git_source,
    extract_tarball,
    git_host,
    verify_upload,
)
from shared.events.deploy import GitRef


def tar_with(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return gzip.compress(buffer.getvalue())


def file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def test_extracts_files_and_unwraps_a_single_directory(tmp_path: Path) -> None:
    context = extract_tarball(tar_with(file("app/Containerfile"), file("app/a.txt")), tmp_path)
    assert context == tmp_path / "app" and (context / "a.txt").read_bytes() == b"x"


@pytest.mark.parametrize("member", [
    file("/etc/evil"),
    file("../escape"),
    file("a/../../escape"),
    link("out", "/etc/passwd"),
    link("out", "../../etc/passwd"),
    link("hard", "/etc/passwd", tarfile.LNKTYPE),
])
def test_unsafe_entries_are_refused(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes]
) -> None:
    with pytest.raises(SourceError, match="unsafe entry"):
        extract_tarball(tar_with(file("Containerfile"), member), tmp_path / "ctx")
    assert not (tmp_path / "escape").exists()


def test_garbage_is_not_a_tarball(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a readable tarball"):
        extract_tarball(b"not a tarball at all", tmp_path)


def test_upload_digest_is_checked() -> None:
    data = b"content"
    digest = hashlib.sha256(data).hexdigest()
    assert verify_upload(data, f"sha256:{digest}") == digest
    with pytest.raises(SourceError):
        verify_upload(b"other", f"sha256:{digest}")


@pytest.mark.parametrize(("url", "ref"), [
    ("-oProxyCommand=x", "main"), ("https://h/r.git", "--upload-pack=x"),
    ("https://h/r.git", "a..b"), ("ext::sh -c x", "main"), ("https://h/r.git", "a b"),
])
def test_bad_git_sources_are_refused(url: str, ref: str) -> None:
    with pytest.raises(SourceError):
        check_git_source(GitRef(url=url, ref=ref), allow_file=True)


def test_file_urls_only_when_allowed() -> None:
    check_git_source(GitRef(url="file:///srv/repo", ref="main"), allow_file=True)
    with pytest.raises(SourceError):
        check_git_source(GitRef(url="file:///srv/repo", ref="main"), allow_file=False)
    check_git_source(GitRef(url="git@github.com:o/r.git", ref="v1.2"), allow_file=False)
    assert git_host("https://git.example.com/o/r.git") == "git.example.com"
    assert git_host("file:///srv/repo") is None
