"""Tiny OCI images pushed straight into the stack's registry over its HTTP API.

The chaos stacks run localnomad's simulated runtime, which never pulls an image, but the
builder still resolves every image reference to a digest in the registry and the
scheduler checks a rollback target's image is still there. So each app gets a real (if
useless) image: one layer holding a text file, a config blob and an OCI manifest, pushed
with the registry v2 API in a few milliseconds, no buildah involved. Different `content`
gives a different digest, which is how a test tells two pushes of one tag apart.

Not here: runnable images (tests/e2e builds those with buildah).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(content: str) -> tuple[bytes, bytes]:
    """(gzip layer, uncompressed tar) holding /content.txt; both deterministic."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = content.encode()
        info = tarfile.TarInfo("content.txt")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), tar_bytes


def _request(method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:500]
        raise RuntimeError(f"registry {method} {url} → {error.code}: {detail}") from None


def _push_blob(registry: str, repo: str, blob: bytes) -> str:
    digest = _sha(blob)
    status, _ = _head(f"http://{registry}/v2/{repo}/blobs/{digest}")
    if status == 200:
        return digest
    _, headers = _request("POST", f"http://{registry}/v2/{repo}/blobs/uploads/")
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    _request("PUT", f"{location}{sep}digest={digest}", blob,
             {"Content-Type": "application/octet-stream"})
    return digest


def _head(url: str) -> tuple[int, dict[str, str]]:
    try:
        return _request("HEAD", url)
    except RuntimeError:
        return 404, {}


def push_image(registry: str, repo: str, tag: str, content: str) -> str:
    """Push `registry/repo:tag` (host:port, plain HTTP); return the manifest digest."""
    layer, tar_bytes = _layer(content)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(tar_bytes)]},
    }, sort_keys=True).encode()
    layer_digest = _push_blob(registry, repo, layer)
    config_digest = _push_blob(registry, repo, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()
    _request("PUT", f"http://{registry}/v2/{repo}/manifests/{tag}", manifest,
             {"Content-Type": OCI_MANIFEST})
    return _sha(manifest)
