"""Serving the UI's static files from memory: `GET /` (the page) and `GET /ui/{path}`.

The files are read once, when the web app is built, from this package (so an editable
install and a wheel serve the same bytes). Caching without a build step: the page is
served with `Cache-Control: no-cache` and names every asset with `?v=<content hash>`;
an asset asked for with its current hash may be cached for a year (`immutable`), any
other request for it revalidates. Every answer carries a strong ETag and honours
`If-None-Match` with 304.

The page gets a strict Content-Security-Policy (own origin only, no inline script or
style): the token lives in the browser's storage, so script injection must find no way in.

Not here: what the page does (app.js) or anything behind `/v1`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

# name → Content-Type (with charset: all of them are UTF-8 text).
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
PAGE = "index.html"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # a short content hash; also the ETag's value

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def load_assets() -> dict[str, Asset]:
    """Every asset, with the page's references rewritten to carry the assets' versions."""
    root = resources.files(__package__)
    raw = {name: root.joinpath(name).read_bytes() for name in ASSETS}
    assets = {name: Asset(body, ASSETS[name], _version(body))
              for name, body in raw.items() if name != PAGE}
    page = raw[PAGE].decode()
    for name, asset in assets.items():
        reference = f'"/ui/{name}"'
        if reference not in page:
            raise RuntimeError(f"{PAGE} does not reference /ui/{name}")
        page = page.replace(reference, f'"/ui/{name}?v={asset.version}"')
    body = page.encode()
    assets[PAGE] = Asset(body, ASSETS[PAGE], _version(body))
    return assets


def _answer(request: web.Request, asset: Asset, cache_control: str,
            extra: dict[str, str]) -> web.Response:
    headers = {"Cache-Control": cache_control, "ETag": asset.etag, **extra}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


def setup_ui(app: web.Application) -> None:
    """Register `GET /` and `GET /ui/{path}` (HEAD too); no token needed for either."""
    assets = load_assets()
    page = assets[PAGE]

    async def index(request: web.Request) -> web.Response:
        return _answer(request, page, REVALIDATE, PAGE_HEADERS)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["path"]
        found = assets.get(name) if name != PAGE else None
        if found is None:
            raise web.HTTPNotFound(reason="no such UI asset")
        cache = IMMUTABLE if request.query.get("v") == found.version else REVALIDATE
        return _answer(request, found, cache, ASSET_HEADERS)

    app.router.add_get("/", index)
    app.router.add_get("/ui/{path}", asset)
