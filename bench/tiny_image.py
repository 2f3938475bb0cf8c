"""Push a tiny OCI image (one empty layer) to a registry through its v2 HTTP API.

For benchmarks on localnomad's simulated runtime, where nothing is pulled: the builder
only needs the tag to resolve to a digest, and buildah would cost seconds per image.

Not here: images that run (devstack.images builds those with buildah).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.request


def _request(method: str, url: str, body: bytes = b"", content_type: str = "") -> tuple[int, str]:
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=body if method != "POST" else b"", method=method,
                                 headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers.get("Location", "")


def _blob(registry: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, location = _request("POST", f"http://{registry}/v2/{repo}/blobs/uploads/")
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    _request("PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream")
    return digest


def push_tiny_image(registry: str, repo: str, tag: str) -> str:
    """Push `registry/repo:tag`; return the manifest digest."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w"):
        pass
    layer = gzip.compress(layer_tar.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(layer_tar.getvalue()).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    config_digest = _blob(registry, repo, config)
    layer_digest = _blob(registry, repo, layer)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(layer)}],
    }).encode()
    _request("PUT", f"http://{registry}/v2/{repo}/manifests/{tag}", manifest,
             "application/vnd.oci.image.manifest.v1+json")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()
