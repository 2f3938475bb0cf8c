"""A private git remote over smart HTTP for the tests: `git http-backend` behind Basic auth.

The server (aiohttp, on a free port) answers 401 without the right credentials and runs
`git http-backend` as a CGI program for requests that have them.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from aiohttp import web


class PrivateGitServer:
    def __init__(self, project_root: Path, username: str, password: str) -> None:
        self.root = project_root
        self._expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.requests = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> PrivateGitServer:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if request.headers.get("Authorization") != self._expected:
            self.refused += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        body = await request.read()
        env = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": "/" + request.match_info["path"],
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "test",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
            "PATH": "/usr/bin:/bin",
        }
        proc = await asyncio.create_subprocess_exec(
            "git", "http-backend", env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate(body)
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name] = value.strip()
        return web.Response(status=status, body=payload, headers=headers)
