"""What the chaos harness watches while a scenario runs, and the Nomad knobs it turns.

- `Tap`: a plain NATS client subscribed to `shaman.>`, `$KV.>` and `$O.>` for the whole
  run. Every message published on the platform's subjects, every KV write and every
  object-store chunk is captured (subject, headers, bytes, time): it is a sink the secret
  marker must never reach, and scenarios time their kills on timeline events seen here
  (`wait_event`). It reconnects across NATS restarts; what was published while it was
  disconnected is read back from the streams afterwards (snapshot.py).
- `NomadRecorder`: follows localnomad's event stream (topic Job) and relists every job's
  versions on each (re)connect and at the end, so that every job version ever created is
  known with its `Meta.shaman_release` / `shaman_deploy_id`, even when the stream is cut
  or its buffer dropped (Nomad keeps only the last 6 versions; the relist on reconnect
  closes the gaps a cut leaves).
- `LocalNomad`: localnomad's test-only control surface (docs/localnomad.md): task
  behaviors (bad releases), injected 5xx and latency, cut event streams, a dropped event
  buffer; plus the few Nomad reads scenarios need.

Not here: judging anything (invariants.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.chaos.waiting import wait_for


@dataclass(frozen=True)
class Captured:
    t: float  # monotonic
    subject: str
    data: bytes
    headers: dict[str, str]


class Tap:
    SUBJECTS = ("shaman.>", "$KV.>", "$O.>")

    def __init__(self, nats_url: str, options: dict[str, str] | None = None) -> None:
        self.nats_url = nats_url
        self.options = options or {}
        self.messages: list[Captured] = []
        self.events: list[dict[str, Any]] = []  # timeline events, decoded, in arrival order
        self._nc: Client | None = None

    async def start(self) -> None:
        async def quiet(_exc: Exception) -> None:
            return None  # disconnects are expected: NATS is one of the things we kill

        self._nc = await nats.connect(
            self.nats_url, name="chaos-tap", max_reconnect_attempts=-1,
            reconnect_time_wait=0.2, error_cb=quiet, pending_size=64 * 1024 * 1024,
            **self.options,  # type: ignore[arg-type]
        )
        for subject in self.SUBJECTS:
            await self._nc.subscribe(subject, cb=self._on_message,
                                     pending_msgs_limit=1_000_000,
                                     pending_bytes_limit=512 * 1024 * 1024)

    async def stop(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def _on_message(self, msg: Msg) -> None:
        self.messages.append(Captured(time.monotonic(), msg.subject, msg.data,
                                      dict(msg.headers or {})))
        if msg.subject.startswith("shaman.events."):
            with contextlib.suppress(ValueError):
                event = json.loads(msg.data)
                if isinstance(event, dict):
                    event["_t"] = time.monotonic()
                    self.events.append(event)

    def find(self, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if all(e.get(k) == v for k, v in fields.items())]

    async def wait_event(self, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """The first timeline event (seen since the tap started) with these fields."""

        def found() -> dict[str, Any] | None:
            matches = self.find(**fields)
            return matches[0] if matches else None

        return await wait_for(found, timeout, f"timeline event {fields}")

    async def wait_message(
        self, predicate: Callable[[Captured], bool], timeout: float, what: str
    ) -> Captured:
        def found() -> Captured | None:
            return next((m for m in self.messages if predicate(m)), None)

        return await wait_for(found, timeout, what)


@dataclass
class JobVersion:
    job: str
    version: int
    release: str | None
    deploy_id: str | None
    stop: bool
    modify_index: int
    count: int | None


@dataclass
class NomadRecorder:
    addr: str
    versions: dict[str, dict[int, JobVersion]] = field(default_factory=dict)
    connects: int = 0
    errors: int = 0
    _task: asyncio.Task[None] | None = None
    _session: aiohttp.ClientSession | None = None
    _index: int = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=5, sock_read=None))
        self._task = asyncio.create_task(self._follow(), name="chaos-nomad-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def record(self, job: dict[str, Any]) -> None:
        if not isinstance(job, dict) or "ID" not in job or "Version" not in job:
            return
        meta = job.get("Meta") or {}
        groups = job.get("TaskGroups") or []
        self.versions.setdefault(str(job["ID"]), {})[int(job["Version"])] = JobVersion(
            job=str(job["ID"]), version=int(job["Version"]),
            release=meta.get("shaman_release"), deploy_id=meta.get("shaman_deploy_id"),
            stop=bool(job.get("Stop")), modify_index=int(job.get("JobModifyIndex") or 0),
            count=int(groups[0].get("Count", 0)) if groups else None,
        )

    async def relist(self) -> None:
        """Every job's retained versions (the last 6), straight from the API."""
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=30)
        async with self._session.get(f"{self.addr}/v1/jobs", timeout=timeout) as resp:
            resp.raise_for_status()
            jobs = await resp.json()
        for stub in jobs:
            url = f"{self.addr}/v1/job/{stub['ID']}/versions"
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status == 404:
                    continue
                resp.raise_for_status()
                body = await resp.json()
            for job in body.get("Versions") or []:
                self.record(job)

    async def _follow(self) -> None:
        assert self._session is not None
        while True:
            try:
                await self.relist()
                url = f"{self.addr}/v1/event/stream?topic=Job"
                if self._index:
                    url += f"&index={self._index + 1}"
                async with self._session.get(url) as resp:
                    resp.raise_for_status()
                    self.connects += 1
                    async for line in resp.content:
                        self._envelope(line)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
            await asyncio.sleep(0.2)  # reconnect backoff after a cut or an injected fault

    def _envelope(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            envelope = json.loads(line)
        except ValueError:
            return
        for event in envelope.get("Events") or []:
            job = (event.get("Payload") or {}).get("Job")
            if job is not None:
                self.record(job)
        self._index = max(self._index, int(envelope.get("Index") or 0))


class LocalNomad:
    """localnomad's control surface and a few plain Nomad reads (aiohttp)."""

    def __init__(self, addr: str) -> None:
        self.addr = addr.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LocalNomad:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self._session is not None
        async with self._session.request(method, self.addr + path,
                                         json=body if body is not None else None) as resp:
            text = await resp.text()
            if resp.status == 404:
                return None
            if resp.status >= 400:
                raise RuntimeError(f"localnomad {method} {path} → {resp.status}: {text[:300]}")
            return json.loads(text) if text.strip() else None

    async def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self._call(method, f"/_localnomad/{path}", body)

    async def behave(self, **behavior: Any) -> None:
        await self.control("POST", "behaviors", behavior)

    async def fault(self, **rule: Any) -> None:
        await self.control("POST", "faults", rule)

    async def clear_faults(self) -> None:
        await self.control("DELETE", "faults")

    async def cut_streams(self) -> None:
        await self.control("POST", "events/cut")

    async def drop_buffer(self) -> None:
        await self.control("POST", "events/drop-buffer")

    async def job(self, app: str) -> dict[str, Any] | None:
        result = await self._call("GET", f"/v1/job/{app}")
        return result if isinstance(result, dict) else None

    async def job_text(self, app: str) -> str:
        """The raw JSON of the job, its versions and its allocations (a secret sink)."""
        assert self._session is not None
        parts = []
        for path in (f"/v1/job/{app}", f"/v1/job/{app}/versions",
                     f"/v1/job/{app}/allocations", f"/v1/job/{app}/submission"):
            async with self._session.get(self.addr + path) as resp:
                parts.append(await resp.text())
        return "\n".join(parts)

    async def allocations(self, app: str) -> list[dict[str, Any]]:
        result = await self._call("GET", f"/v1/job/{app}/allocations")
        return list(result or [])

    async def allocation_text(self, alloc_id: str) -> str:
        assert self._session is not None
        async with self._session.get(f"{self.addr}/v1/allocation/{alloc_id}") as resp:
            return await resp.text()
