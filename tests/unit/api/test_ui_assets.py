"""The web UI's static shell: `/` and every asset the page names are served, typed and cached
right, without a token. A bare aiohttp app with `setup_ui` (and the api's JSON error
middleware) on a real local socket; no NATS needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.routing import json_errors
from services.api.ui import ASSETS, setup_ui
from services.api.ui.shell import IMMUTABLE, REVALIDATE


class References(HTMLParser):
    """Every same-origin URL the page loads (scripts, stylesheets, icons)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        url = values.get("src") if tag == "script" else values.get("href") if tag == "link" \
            else None
        if url and not url.startswith("data:"):
            self.urls.append(url)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[json_errors])
    setup_ui(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def page_references(client: TestClient) -> list[str]:
    async with client.get("/") as resp:
        parser = References()
        parser.feed(await resp.text())
    return parser.urls


async def test_every_asset_the_page_references_is_served_with_its_content_type(
    client: TestClient,
) -> None:
    urls = await page_references(client)
    names = {urlsplit(url).path.removeprefix("/ui/") for url in urls}
    assert names == set(ASSETS) - {"index.html"}
    for url in urls:
        assert url.startswith("/ui/") and "?v=" in url, url
        async with client.get(url) as resp:
            assert resp.status == 200, url
            name = urlsplit(url).path.removeprefix("/ui/")
            assert resp.headers["Content-Type"] == ASSETS[name]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            # The page names the current version, so the browser may keep it for good.
            assert resp.headers["Cache-Control"] == IMMUTABLE
            assert len(await resp.read()) > 100


async def test_the_page_is_html_revalidated_and_locked_down_without_a_token(
    client: TestClient,
) -> None:
    async with client.get("/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert resp.headers["Cache-Control"] == REVALIDATE
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "connect-src 'self'" in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        body = await resp.text()
    assert "<script src=\"/ui/app.js?v=" in body
    assert "http://" not in body and "https://" not in body  # nothing from outside


async def test_conditional_requests_answer_304(client: TestClient) -> None:
    for url in ["/", *await page_references(client)]:
        async with client.get(url) as first:
            etag = first.headers["ETag"]
        async with client.get(url, headers={"If-None-Match": etag}) as again:
            assert again.status == 304, url
            assert await again.read() == b""
            assert again.headers["ETag"] == etag


async def test_an_asset_without_its_current_version_is_revalidated(client: TestClient) -> None:
    async with client.get("/ui/app.js") as plain, client.get("/ui/app.js?v=old") as stale:
        assert plain.status == stale.status == 200
        assert plain.headers["Cache-Control"] == stale.headers["Cache-Control"] == REVALIDATE


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/index.html", "/ui/..%2Fshell.py",
                                  "/ui/__init__.py"])
async def test_anything_else_under_ui_is_a_json_404(client: TestClient, path: str) -> None:
    async with client.get(path) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_head_works_like_get(client: TestClient) -> None:
    async with client.head("/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
