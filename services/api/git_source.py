"""Checks on user-supplied git sources before the builder ever fetches them.

A git URL must use a scheme the builder supports (https, http, ssh, git, file), carry
no credentials (those come from Vault, never from a request body where they would end
up in records and logs), and must not name a link-local, metadata or unspecified
address (SSRF, OWASP API7). Host names are not resolved here: the builder checks the
resolved address again when it fetches. A ref is a branch, tag or commit name.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>.+)$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}$")
_BLOCKED_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
MAX_URL_LENGTH = 2048


def _blocked_ip(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved


def check_git_url(url: str) -> str | None:
    """None when acceptable, else what is wrong (the URL itself is never echoed)."""
    if not url or len(url) > MAX_URL_LENGTH or any(c.isspace() for c in url):
        return f"must be a git URL of at most {MAX_URL_LENGTH} characters without spaces"
    scp = _SCP_LIKE.match(url) if "://" not in url else None
    if scp is not None:
        host = scp.group("host")
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            return "is not a valid URL"
        if parts.scheme not in ALLOWED_SCHEMES:
            return "scheme must be one of " + ", ".join(sorted(ALLOWED_SCHEMES))
        if parts.password is not None or (parts.username and parts.scheme != "ssh"):
            return "must not contain credentials; store them as platform secrets instead"
        if parts.scheme == "file":
            return None if parts.path.startswith("/") else "file URLs need an absolute path"
        host = parts.hostname or ""
        if not host:
            return "must name a host"
    if host.lower() in _BLOCKED_HOSTS or _blocked_ip(host):
        return "must not point at a link-local, metadata or unspecified address"
    return None


def check_git_ref(ref: str) -> str | None:
    if not _REF.match(ref) or ".." in ref or ref.endswith((".lock", "/", ".")) or "//" in ref:
        return "must be a branch, tag or commit name (letters, digits, '.', '_', '/', '+', '-')"
    return None
