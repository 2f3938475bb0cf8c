"""Getting a build's source onto disk: a shallow git fetch or an uploaded tarball.

- git: `git init` + `git fetch --depth 1 <url> <ref>` (a branch, a tag or a full commit
  sha) + checkout of FETCH_HEAD; the resolved commit sha is returned. Credentials for
  private remotes come from the caller (Vault) and reach git through its environment as
  an `http.extraHeader`, never on the command line. Prompts are disabled, so a remote
  that wants a password fails at once instead of hanging.
- upload: the tarball is checked against its sha256 and extracted with tarfile's `data`
  filter (no absolute paths, no `..`, no links leading out, no device files), within
  size and member limits.

Every failure here is the source's fault and will not pass by retrying: `SourceError`.
This module does not build anything and does not know about NATS beyond the bytes it gets.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from services.builder.credentials import Credential
from services.builder.process import run_streaming
from shared.errors import PermanentError
from shared.events.deploy import GitRef

MAX_EXTRACTED_BYTES = 2 * 1024**3
MAX_MEMBERS = 100_000
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_BAD_REF = re.compile(r"(^-)|(\.\.)|[\s~^:?*\[\\]|[\x00-\x1f\x7f]")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")
ALLOWED_SCHEMES = ("https", "http", "ssh", "git")


class SourceError(PermanentError):
    """The source cannot be fetched or unpacked as given (unknown URL or ref, bad tarball)."""


def git_host(url: str) -> str | None:
    """The host credentials are looked up for, or None for local (file://) sources."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ssh", "git"):
        return parts.hostname
    return None


def check_git_source(git: GitRef, *, allow_file: bool) -> None:
    """Reject URLs and refs that could be read as options or reach what they should not."""
    url, ref = git.url.strip(), git.ref.strip()
    if not url or url.startswith("-"):
        raise SourceError("git url is empty or starts with '-'")
    scheme = urlsplit(url).scheme
    allowed = (*ALLOWED_SCHEMES, "file") if allow_file else ALLOWED_SCHEMES
    if scheme not in allowed and not (scheme == "" and _SCP_LIKE.match(url)):
        raise SourceError(f"git url scheme {scheme or '(none)'!r} is not allowed here")
    if not ref or _BAD_REF.search(ref) or ref.endswith((".lock", "/", ".")):
        raise SourceError(f"git ref {ref!r} is not a valid branch, tag or commit")


def _git_env(base: dict[str, str], credential: Credential | None) -> dict[str, str]:
    env = dict(base)
    env.update({
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        "GIT_CONFIG_NOSYSTEM": "1",
    })
    if credential is not None:
        pair = f"{credential.username}:{credential.password}".encode()
        env["GIT_CONFIG_COUNT"] = "1"
        env["GIT_CONFIG_KEY_0"] = "http.extraHeader"
        env["GIT_CONFIG_VALUE_0"] = "Authorization: Basic " + base64.b64encode(pair).decode()
    return env


async def fetch_git(
    git: GitRef,
    dest: Path,
    *,
    on_line: Callable[[str], None],
    env: dict[str, str],
    credential: Credential | None = None,
    allow_file: bool = True,
) -> str:
    """Shallow-fetch `git.ref` of `git.url` into `dest`; return the commit sha."""
    check_git_source(git, allow_file=allow_file)
    os.makedirs(dest, exist_ok=True)
    genv = _git_env(env, credential)
    output: list[str] = []

    def collect(line: str) -> None:
        output.append(line)
        on_line(line)

    async def git_cmd(*args: str, what: str) -> None:
        output.clear()
        code = await run_streaming(["git", *args], collect, env=genv, cwd=dest)
        if code != 0:
            errors = [ln.strip() for ln in output if ln.startswith(("fatal:", "error:"))]
            detail = "; ".join(errors) or (output[-1] if output else f"exit code {code}")
            raise SourceError(f"{what} failed: {detail}")

    on_line(f"$ git fetch --depth 1 {git.url} {git.ref}")
    await git_cmd("init", "-q", what="git init")
    await git_cmd("fetch", "--depth", "1", "--no-tags", "--", git.url, git.ref,
                  what=f"git fetch of {git.url} at {git.ref}")
    await git_cmd("-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD",
                  what="git checkout")
    sha: list[str] = []
    code = await run_streaming(["git", "rev-parse", "HEAD"], sha.append, env=genv, cwd=dest)
    if code != 0 or not sha or not _FULL_SHA.match(sha[-1].strip()):
        raise SourceError("git rev-parse HEAD failed after checkout")
    commit = sha[-1].strip()
    # The build context is the tree, not the repository: .git would change on every
    # fetch and defeat the layer cache of `COPY . …`.
    shutil.rmtree(dest / ".git", ignore_errors=True)
    on_line(f"checked out {git.ref} at {commit}")
    return commit


def verify_upload(data: bytes, digest: str) -> str:
    """Check the tarball's sha256 against the digest the api recorded; return the hex."""
    actual = hashlib.sha256(data).hexdigest()
    expected = digest.removeprefix("sha256:").lower()
    if actual != expected:
        raise SourceError("uploaded source does not match its recorded sha256 digest")
    return actual


def extract_tarball(data: bytes, dest: Path) -> Path:
    """Extract a (gzip) tarball safely into `dest`; return the build context directory.

    A tarball holding one top-level directory and nothing else (`tar czf x.tgz myapp/`)
    uses that directory as the context.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS:
                raise SourceError(f"uploaded source has more than {MAX_MEMBERS} entries")
            if sum(m.size for m in members) > MAX_EXTRACTED_BYTES:
                raise SourceError("uploaded source is larger than 2 GiB when unpacked")
            for member in members:
                # The data filter would strip the slash; an absolute name in a source
                # upload is a mistake or an attack, and worth saying so.
                if member.name.startswith("/"):
                    raise SourceError(f"uploaded source has an unsafe entry: {member.name!r} "
                                      "is an absolute path")
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise SourceError(f"uploaded source has an unsafe entry: {exc}") from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceError(f"uploaded source is not a readable tarball: {exc}") from exc
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest
