"""The chaos client: HTTP calls to the api, each one recorded in the history.

Every call is an `Op` (history.py): invoked, then completed `ok` (2xx), `fail` (4xx, 503)
or `info` (no answer: reset, refused, timed out). A 5xx other than 503 is completed as
`fail` and the checker flags it. The raw body is kept, because API responses are one of
the sinks the secret marker must never reach.

Not here: deciding what a scenario calls, or when.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.chaos.history import History, Op, Outcome

CALL_TIMEOUT_S = 20.0


class ShamanClient:
    def __init__(self, api_url: str, token: str, history: History) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.history = history
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ShamanClient:
        # A fresh connection per call: a killed api must not leave a pooled socket that
        # turns the next call into a spurious reset.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=64),
            timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, f: str, method: str, path: str, *, body: Any = None, app: str | None = None,
        headers: dict[str, str] | None = None, process: str = "client",
        raw: bytes | None = None,
    ) -> Op:
        assert self._session is not None, "use the client as an async context manager"
        value: dict[str, Any] = {"method": method, "path": path}
        if body is not None:
            value["body"] = body
        if headers:
            value["headers"] = headers
        op = self.history.invoke(process, f, app, value)
        hdrs = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        if data is not None and raw is None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._session.request(method, self.api_url + path, data=data,
                                             headers=hdrs) as resp:
                text = await resp.text()
                status = resp.status
                resp_headers = dict(resp.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return self.history.complete(op, "info", error=f"{type(exc).__name__}: {exc}")
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = None
        outcome: Outcome = "ok" if 200 <= status < 300 else "fail"
        return self.history.complete(op, outcome, status=status, body=parsed, text=text,
                                     headers=resp_headers)

    # -- the calls the scenarios make ---------------------------------------------------

    async def create_app(self, spec: dict[str, Any], process: str = "client") -> Op:
        return await self.call("create_app", "POST", "/v1/apps", body=spec, app=spec["name"],
                               process=process)

    async def deploy(
        self, app: str, image: str, *, idempotency_key: str | None = None,
        process: str = "client",
    ) -> Op:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self.call("deploy", "POST", f"/v1/apps/{app}/deploys",
                               body={"image": image}, app=app, headers=headers,
                               process=process)

    async def get_deploy(self, app: str, deploy_id: str, process: str = "client") -> Op:
        return await self.call("get_deploy", "GET", f"/v1/apps/{app}/deploys/{deploy_id}",
                               app=app, process=process)

    async def get_app(self, app: str, process: str = "client") -> Op:
        return await self.call("get_app", "GET", f"/v1/apps/{app}", app=app, process=process)

    async def put_secrets(self, app: str, values: dict[str, str],
                          process: str = "client") -> Op:
        return await self.call("put_secrets", "PUT", f"/v1/apps/{app}/secrets", body=values,
                               app=app, process=process)

    async def get_secrets(self, app: str, process: str = "client") -> Op:
        return await self.call("get_secrets", "GET", f"/v1/apps/{app}/secrets", app=app,
                               process=process)

    async def set_config(self, app: str, values: dict[str, str | None],
                         process: str = "client") -> Op:
        return await self.call("set_config", "PATCH", f"/v1/apps/{app}/config", body=values,
                               app=app, process=process)

    async def releases(self, app: str, process: str = "client") -> Op:
        return await self.call("releases", "GET", f"/v1/apps/{app}/releases", app=app,
                               process=process)
