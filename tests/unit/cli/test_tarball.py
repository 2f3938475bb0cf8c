"""The source upload: which files go in (gitignore, .dockerignore, .git) and reproducibility."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from cli.tarball import build_archive, collect_files


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {m.name: m for m in archive.getmembers()}


def test_git_directory_is_never_sent(tmp_path: Path) -> None:
    tree(tmp_path, {"Containerfile": "FROM x", ".git/config": "[core]", ".git/HEAD": "ref"})
    assert collect_files(tmp_path) == ["Containerfile"]


def test_gitignore_patterns(tmp_path: Path) -> None:
    tree(tmp_path, {
        ".gitignore": "# build output\nbuild/\n*.log\n!keep.log\n/top.txt\nsecret-*\n",
        "Containerfile": "FROM x",
        "build/out.bin": "x",
        "src/build/also.bin": "x",  # "build/" matches a directory at any depth
        "debug.log": "x",
        "src/deep/trace.log": "x",
        "keep.log": "x",
        "top.txt": "x",
        "src/top.txt": "x",  # "/top.txt" is anchored to the root
        "secret-key.pem": "x",
        "src/app.py": "print()",
    })
    assert collect_files(tmp_path) == [
        ".gitignore", "Containerfile", "keep.log", "src", "src/app.py", "src/deep",
        "src/top.txt",
    ]


def test_nested_gitignore_is_relative_to_its_directory(tmp_path: Path) -> None:
    tree(tmp_path, {
        ".gitignore": "*.tmp\n",
        "Containerfile": "FROM x",
        "web/.gitignore": "/dist\n!important.tmp\n",
        "web/dist/bundle.js": "x",
        "web/src/dist/keep.js": "x",  # "/dist" in web/.gitignore means web/dist only
        "web/important.tmp": "x",  # the deeper file re-includes it
        "web/other.tmp": "x",
        "scratch.tmp": "x",
    })
    assert collect_files(tmp_path) == [
        ".gitignore", "Containerfile", "web", "web/.gitignore", "web/important.tmp", "web/src",
        "web/src/dist", "web/src/dist/keep.js",
    ]


def test_dockerignore_is_anchored_at_the_root(tmp_path: Path) -> None:
    tree(tmp_path, {
        ".dockerignore": "# docker\nnode_modules\n./docs\n**/*.pyc\n!docs/keep.md\nContainerfile\n",
        "Containerfile": "FROM x",
        "node_modules/a/index.js": "x",
        "src/node_modules/b.js": "x",  # docker: "node_modules" is only ./node_modules
        "docs/guide.md": "x",
        "src/mod.pyc": "x",
        "mod.pyc": "x",
        "src/mod.py": "x",
    })
    # The Containerfile and .dockerignore are sent even when ignored: the build needs them.
    assert collect_files(tmp_path) == [
        ".dockerignore", "Containerfile", "src", "src/mod.py", "src/node_modules",
        "src/node_modules/b.js",
    ]


def test_symlinks_are_sent_as_links_and_special_files_skipped(tmp_path: Path) -> None:
    tree(tmp_path, {"Containerfile": "FROM x", "real/file.txt": "x"})
    (tmp_path / "link-to-dir").symlink_to("real")
    (tmp_path / "link-to-file").symlink_to("real/file.txt")
    os.mkfifo(tmp_path / "a-fifo")
    data = build_archive(tmp_path).data
    entries = members(data)
    assert "a-fifo" not in entries
    assert entries["link-to-dir"].issym() and entries["link-to-dir"].linkname == "real"
    assert entries["link-to-file"].issym()
    assert "link-to-dir/file.txt" not in entries  # not followed


def test_archive_is_reproducible_and_keeps_the_executable_bit(tmp_path: Path) -> None:
    tree(tmp_path, {"Containerfile": "FROM x", "run.sh": "#!/bin/sh\n", "data.txt": "d"})
    (tmp_path / "run.sh").chmod(0o775)
    (tmp_path / "data.txt").chmod(0o664)
    first = build_archive(tmp_path)
    os.utime(tmp_path / "data.txt", (1, 1))  # a touched file must not change the bytes
    second = build_archive(tmp_path)
    assert first.data == second.data
    assert first.data[:2] == b"\x1f\x8b"
    assert gzip.decompress(first.data)  # a valid gzip stream
    entries = members(first.data)
    assert entries["run.sh"].mode == 0o755
    assert entries["data.txt"].mode == 0o644
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in entries.values()} == {(0, 0, "", 0)}
    assert first.files == ("Containerfile", "data.txt", "run.sh")


def test_contents_survive(tmp_path: Path) -> None:
    tree(tmp_path, {"Containerfile": "FROM busybox\n", "ünïcode/名前.txt": "hello"})
    with tarfile.open(fileobj=io.BytesIO(build_archive(tmp_path).data), mode="r:gz") as tar:
        extracted = tar.extractfile("ünïcode/名前.txt")
        assert extracted is not None and extracted.read() == b"hello"


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        build_archive(tmp_path / "missing")
