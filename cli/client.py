"""The CLI's HTTP client for the Shaman API (aiohttp).

Every call sends `Authorization: Bearer <token>`. An error answer becomes `ApiError` with
the API's `{"error": {"code", "message", "details"}}` (or the status and a snippet of the
body when a proxy or an unknown route answered instead); an unreachable API becomes
`ApiUnreachable`, whose message tells the user what to check (cli/errors.py).

Retries, with capped exponential backoff and jitter (tenacity), only where repeating is
harmless: a GET is retried when the API answers 502/503/504 (its NATS or Vault is briefly
away; `Retry-After` is honoured) or drops the connection; a POST that carries an
`Idempotency-Key` is retried only when the connection dropped, since then the caller cannot
know whether it arrived and the key makes a repeat safe. A refused connection is reported
at once: waiting would only hide a stack that is not running.

Not here: what any call means (cli/commands/), reconnecting long streams (cli/streams.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from cli.errors import ApiError, ApiUnreachable, ConnectionDropped, unreachable_message
from cli.settings import Credentials
from cli.sse import SseComment, SseEvent, SseParser

REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
UPLOAD_TIMEOUT_S = 600.0
RETRY_ATTEMPTS = 4
MAX_RETRY_AFTER_S = 10.0
#: The comment the API sends after a stream's replayed history (docs/api.md, Events).
REPLAY_COMPLETE = "replay-complete"


def error_from_body(status: int, body: bytes, retry_after: str | None = None) -> ApiError:
    """Build an ApiError from an error answer, whether or not it has the API's JSON shape."""
    retry_after_s: float | None = None
    if retry_after is not None:
        try:
            retry_after_s = float(retry_after)
        except ValueError:
            retry_after_s = None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        return ApiError(
            status,
            str(error.get("code") or f"http_{status}"),
            str(error.get("message") or "(no message)"),
            error.get("details"),
            retry_after_s,
        )
    text = body.decode("utf-8", errors="replace").strip().splitlines()
    snippet = text[0][:200] if text else ""
    message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    return ApiError(status, f"http_{status}", message, None, retry_after_s)


def _retryable_read(error: BaseException) -> bool:
    if isinstance(error, ApiError):
        return error.status in (502, 503, 504)
    return isinstance(error, ConnectionDropped)


def _retryable_write(error: BaseException) -> bool:
    return isinstance(error, ConnectionDropped)


@dataclass(frozen=True)
class StreamedEvent:
    """One SSE event of the timeline: its id (the stream sequence) and its JSON payload."""

    id: str | None
    data: dict[str, Any]


class ShamanClient:
    """One aiohttp session to one API; use `async with ShamanClient(creds) as client`."""

    def __init__(self, credentials: Credentials) -> None:
        self.api_url = credentials.api_url
        self._token = credentials.token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ShamanClient:
        self._session = aiohttp.ClientSession(
            headers={
                "Authorization": f"Bearer {self._token}",
                "User-Agent": "shaman-cli",
            },
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ShamanClient used outside `async with`")
        return self._session

    def url(self, path: str) -> str:
        return self.api_url + path

    # -- request/response ------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> Any:
        """Make one call and return its decoded JSON (None for an empty body)."""
        if method in ("GET", "HEAD"):
            retryable = _retryable_read
        elif headers and "Idempotency-Key" in headers:
            retryable = _retryable_write
        else:
            return await self._request_once(
                method, path, json_body, data, headers, params, timeout_s
            )
        retrying = AsyncRetrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=_wait_honouring_retry_after,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._request_once(
                    method, path, json_body, data, headers, params, timeout_s
                )
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _request_once(
        self,
        method: str,
        path: str,
        json_body: Any,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        timeout_s: float,
    ) -> Any:
        try:
            async with self.session.request(
                method,
                self.url(path),
                json=json_body,
                data=data,
                headers=dict(headers or {}),
                params=dict(params or {}),
                timeout=aiohttp.ClientTimeout(total=timeout_s, connect=CONNECT_TIMEOUT_S),
            ) as response:
                body = await response.read()
                if response.status >= 400:
                    raise error_from_body(
                        response.status, body, response.headers.get("Retry-After")
                    )
        except aiohttp.ClientConnectorError:
            raise ApiUnreachable(unreachable_message(self.api_url)) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
            raise ConnectionDropped(self.api_url, repr(error)) from None
        except TimeoutError:
            raise ApiUnreachable(
                f"the Shaman API at {self.api_url} did not answer {method} {path} "
                f"within {timeout_s:.0f}s",
                code="timeout",
            ) from None
        except aiohttp.ClientError as error:
            raise ApiUnreachable(
                f"talking to the Shaman API at {self.api_url} failed: {error}"
            ) from None
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            return body.decode("utf-8", errors="replace")

    # -- streams ----------------------------------------------------------------------

    async def events(
        self,
        *,
        app: str | None,
        types: list[str] | None = None,
        last_event_id: str | None = None,
        read_timeout_s: float = 45.0,
        connected: asyncio.Event | None = None,
        until_replayed: bool = False,
    ) -> AsyncGenerator[StreamedEvent, None]:
        """One SSE connection to `GET /v1/events`; ends when the server closes it, or with
        `until_replayed` at the server's `: replay-complete` comment (the end of the history).

        `connected` is set once the server has answered 200 *and* sent its first bytes
        (the API opens every stream with `retry:` and a `: connected` comment), so a caller
        can start a deploy once the server follows the timeline and see all its events.
        The server sends a keep-alive comment every 15 s; `read_timeout_s` of silence
        means the connection is dead.
        """
        params: dict[str, str] = {}
        if app:
            params["app"] = app
        if types:
            params["type"] = ",".join(types)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        async for event in self._sse("/v1/events", params, headers, read_timeout_s, connected,
                                     comments=until_replayed):
            if isinstance(event, SseComment):
                if event.text == REPLAY_COMPLETE:
                    return
                continue
            try:
                payload = json.loads(event.data)
            except ValueError:
                continue  # not a timeline event; consumers ignore what they do not know
            if isinstance(payload, dict):
                yield StreamedEvent(id=event.id, data=payload)

    async def _sse(
        self,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        read_timeout_s: float,
        connected: asyncio.Event | None,
        *,
        comments: bool = False,
    ) -> AsyncIterator[SseEvent | SseComment]:
        parser = SseParser(comments=comments)
        async with self._open_stream(path, params, headers, read_timeout_s) as response:
            try:
                async for chunk in response.content.iter_any():
                    if connected is not None:
                        connected.set()
                    for event in parser.feed(chunk):
                        yield event
            except (TimeoutError, aiohttp.ClientPayloadError,
                    aiohttp.ServerDisconnectedError) as error:
                raise ConnectionDropped(self.api_url, repr(error)) from None

    async def text_stream(
        self, path: str, params: Mapping[str, str], read_timeout_s: float | None = None
    ) -> AsyncGenerator[bytes, None]:
        """A plain-text streaming body (the app's logs), chunk by chunk."""
        async with self._open_stream(
            path, params, {"Accept": "text/plain"}, read_timeout_s
        ) as response:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            except (TimeoutError, aiohttp.ClientPayloadError,
                    aiohttp.ServerDisconnectedError) as error:
                raise ConnectionDropped(self.api_url, repr(error)) from None

    def _open_stream(
        self,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        read_timeout_s: float | None,
    ) -> _StreamContext:
        return _StreamContext(self, path, params, headers, read_timeout_s)


class _StreamContext:
    """Opens a streaming GET, turning error answers and connection failures into CliErrors."""

    def __init__(
        self,
        client: ShamanClient,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        read_timeout_s: float | None,
    ) -> None:
        self._client = client
        self._path = path
        self._params = dict(params)
        self._headers = dict(headers)
        self._read_timeout_s = read_timeout_s
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        client = self._client
        try:
            response = await client.session.get(
                client.url(self._path),
                params=self._params,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=CONNECT_TIMEOUT_S, sock_read=self._read_timeout_s
                ),
            )
        except aiohttp.ClientConnectorError:
            raise ApiUnreachable(unreachable_message(client.api_url)) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                TimeoutError) as error:
            raise ConnectionDropped(client.api_url, repr(error)) from None
        except aiohttp.ClientError as error:
            raise ApiUnreachable(
                f"talking to the Shaman API at {client.api_url} failed: {error}"
            ) from None
        if response.status >= 400:
            body = await response.read()
            response.release()
            raise error_from_body(response.status, body, response.headers.get("Retry-After"))
        self._response = response
        return response

    async def __aexit__(self, *exc_info: object) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None


def _wait_honouring_retry_after(retry_state: Any) -> float:
    """Capped exponential backoff with jitter, or the server's Retry-After when it gave one."""
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, ApiError) and error.retry_after_s is not None:
        return min(error.retry_after_s, MAX_RETRY_AFTER_S)
    return float(wait_exponential_jitter(initial=0.5, max=MAX_RETRY_AFTER_S)(retry_state))
