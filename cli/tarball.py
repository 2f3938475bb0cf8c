"""The source upload of `shaman deploy PATH`: a gzip tarball of a directory, minus ignores.

What is left out, as a developer expects from git and docker:

- `.git/` always (history is not build context);
- whatever `.gitignore` files ignore: the one at the root and nested ones, each relative
  to its own directory, the deeper one deciding (pathspec's gitignore semantics:
  `build/`, `*.log`, `!keep.log`, `/top`, `**`);
- whatever the root `.dockerignore` ignores, with docker's meaning: patterns are relative
  to the root (`foo` is only `./foo`; `**/foo` is any `foo`);
- an ignored directory is skipped whole (git cannot re-include a file below it either).

The root `Containerfile`, `Dockerfile` and `.dockerignore` are always sent, as docker sends
its Dockerfile even when `.dockerignore` names it: the builder needs them.

The archive is reproducible: entries in sorted order, owner 0:0 with no names, mtime 0 and a
gzip header without a timestamp, so the same tree uploads byte-identical bytes (and the
builder can recognise a source it has built before). File modes (the executable bit)
and symlinks are kept; sockets, devices and FIFOs are skipped.

Not here: uploading (cli/commands/deploy.py) and size limits (the API answers 413).
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

ALWAYS_SKIPPED_DIRS = frozenset({".git"})
ALWAYS_SENT_AT_ROOT = frozenset({"Containerfile", "Dockerfile", ".dockerignore"})


@dataclass(frozen=True)
class SourceArchive:
    data: bytes
    files: tuple[str, ...]  # the paths inside the archive, relative, "/"-separated

    @property
    def size(self) -> int:
        return len(self.data)


def _read_patterns(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return []


def dockerignore_spec(lines: list[str]) -> GitIgnoreSpec | None:
    """A .dockerignore as a gitignore spec: every pattern anchored at the root."""
    anchored: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:].strip()
        # Docker cleans paths: "./a", "/a" and "a" are all the root's "a".
        line = line.removeprefix("./").lstrip("/")
        if not line:
            continue
        anchored.append(("!" if negate else "") + "/" + line)
    return GitIgnoreSpec.from_lines(anchored) if anchored else None


class IgnoreRules:
    """The ignore decisions for one source tree (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._docker = dockerignore_spec(_read_patterns(root / ".dockerignore"))
        self._git: dict[str, GitIgnoreSpec] = {}  # directory (relative, "" = root) → spec

    def enter_directory(self, relative_dir: str) -> None:
        """Load the directory's own .gitignore, if any; call before asking about its entries."""
        directory = self.root / relative_dir if relative_dir else self.root
        lines = _read_patterns(directory / ".gitignore")
        if any(line.strip() and not line.lstrip().startswith("#") for line in lines):
            self._git[relative_dir] = GitIgnoreSpec.from_lines(lines)

    def ignored(self, relative: str, is_dir: bool) -> bool:
        if not relative or relative in ALWAYS_SENT_AT_ROOT:
            return False
        name = relative.rsplit("/", 1)[-1]
        if is_dir and name in ALWAYS_SKIPPED_DIRS:
            return True
        candidate = relative + "/" if is_dir else relative
        if self._docker is not None and self._docker.match_file(candidate):
            return True
        return self._git_ignored(candidate)

    def _git_ignored(self, candidate: str) -> bool:
        # The deepest .gitignore with an opinion decides, as in git.
        parts = candidate.rstrip("/").split("/")
        for depth in range(len(parts) - 1, -1, -1):
            base = "/".join(parts[:depth])
            spec = self._git.get(base)
            if spec is None:
                continue
            inside = candidate[len(base) + 1 :] if base else candidate
            decision = spec.check_file(inside).include
            if decision is not None:
                return bool(decision)
        return False


def collect_files(root: Path) -> list[str]:
    """Every path to send (files, symlinks and directories), relative and sorted."""
    root = root.resolve()
    rules = IgnoreRules(root)
    selected: list[str] = []
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        relative_dir = Path(current).relative_to(root).as_posix()
        relative_dir = "" if relative_dir == "." else relative_dir
        rules.enter_directory(relative_dir)
        kept_dirs = []
        for name in sorted(dirnames):
            relative = f"{relative_dir}/{name}" if relative_dir else name
            path = Path(current) / name
            if path.is_symlink():
                # os.walk lists a symlink to a directory as a directory; send the link itself.
                if not rules.ignored(relative, is_dir=False):
                    selected.append(relative)
                continue
            if rules.ignored(relative, is_dir=True):
                continue
            kept_dirs.append(name)
            selected.append(relative)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            relative = f"{relative_dir}/{name}" if relative_dir else name
            mode = os.lstat(Path(current) / name).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                continue
            if not rules.ignored(relative, is_dir=False):
                selected.append(relative)
    return sorted(selected)


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if info.isdir():
        info.mode = 0o755
    elif info.isreg():
        # Keep only whether it is executable: umask-dependent group/other bits are noise.
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    return info


def build_archive(root: Path) -> SourceArchive:
    """The gzip tarball of `root` with the ignore rules applied (see the module docstring)."""
    root = root.resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    paths = collect_files(root)
    buffer = io.BytesIO()
    # mtime=0 keeps the gzip header free of a timestamp: same tree, same bytes.
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for relative in paths:
            archive.add(root / relative, arcname=relative, recursive=False, filter=_normalised)
    files = tuple(p for p in paths if not (root / p).is_dir() or (root / p).is_symlink())
    return SourceArchive(data=buffer.getvalue(), files=files)
