"""The floor: the same hops as Shaman with nothing of Shaman in them, as one process.

    FLOOR_NATS_URL=URL python -m bench.floor --port PORT [--nomad ADDR]

An aiohttp server and nats-py, nothing else (no settings, no records, no auth, no
logging): what the machine allows for each hop the benchmarks time. `bench/__main__.py`
starts it beside the real service on the same nats-server (and localnomad) and drives both
with the same load generator, so each figure has its floor measured in the same run.

- `POST /v1/apps/{app}/deploys`: decode the JSON body, publish it to JetStream with a
  `Nats-Msg-Id` and wait for the ack, answer 202 `{"id"}`. The floor of "deploys accepted
  per second" (and of the accept step of a deploy).
- `POST /v1/apps`: 201, so load generators that create an app first work unchanged.
- `GET /v1/events?app=`: Server-Sent Events from a core NATS subscription on the timeline
  subjects; each message is framed once and the same bytes written to every connection's
  transport (events arriving in one loop iteration in one write). The floor of SSE fan-out.
- With `--nomad`, the deploy pipeline behind the accept (the shape of architecture.md §1 with
  one consumer per hop and no logic): a pull consumer resolves the image tag to a digest with
  one `HEAD` to the registry and publishes the release work; a second pull consumer
  registers a Nomad job (`Meta.floor_deploy_id`) for it. The floor of "POST /deploys →
  job registered in Nomad".
- With `--nomad`, a rollback reactor: reads Nomad's event stream (Deployment topic); a
  deployment of a job named `floorrb-*` that turns `failed` is handed over one JetStream hop
  to a consumer that reads the job's versions and reverts it to the newest stable one. The
  floor of "deployment failed → rollback registered in Nomad".

Prints `floor ready` on stdout once it serves. Not a service: no health, no metrics, no
error handling beyond what a benchmark needs, and never used outside bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import nats.errors
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

STREAM = "FLOOR_WORK"
BUILD = "floor.work.build"
RELEASE = "floor.work.release"
ROLLBACK = "floor.work.rollback"
EVENTS = "shaman.events.>"  # the timeline subjects Shaman's SSE serves, published by the bench
ROLLBACK_JOB_PREFIX = "floorrb-"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
S = 1_000_000_000


def chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def floor_job(app: str, deploy_id: str, image: str) -> dict[str, Any]:
    """A job of the shape Shaman renders (one group, one task, a service with a check)."""
    return {"Job": {
        "ID": app, "Name": app, "Type": "service", "Datacenters": ["*"],
        "Meta": {"floor_deploy_id": deploy_id},
        "TaskGroups": [{
            "Name": "web", "Count": 1,
            "Networks": [{"DynamicPorts": [{"Label": "http", "To": 8080}]}],
            "Update": {"MaxParallel": 1, "HealthCheck": "task_states",
                       "MinHealthyTime": int(0.2 * S), "HealthyDeadline": 300 * S,
                       "ProgressDeadline": 600 * S, "AutoRevert": False},
            "Services": [{"Name": app, "PortLabel": "http", "Provider": "nomad"}],
            "Tasks": [{"Name": "app", "Driver": "docker",
                       "Config": {"image": image, "ports": ["http"]},
                       "Env": {"PORT": "8080"}, "Resources": {"CPU": 100, "MemoryMB": 64}}],
        }],
    }}


class Floor:
    def __init__(self, nats_url: str, nomad_addr: str | None) -> None:
        self.nats_url = nats_url
        self.nomad = nomad_addr.rstrip("/") if nomad_addr else None
        self.ids = itertools.count(1)
        self.sse: dict[str, set[asyncio.Transport]] = {}
        self.sse_seq = 0
        self.sse_pending: dict[str, list[bytes]] = {}
        self.sse_flush_scheduled = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.nc: NatsClient
        self.js: JetStreamContext
        self.http: aiohttp.ClientSession

    async def start(self) -> None:
        self.nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1,
                                     allow_reconnect=True, connect_timeout=5)
        self.js = self.nc.jetstream()
        config = StreamConfig(name=STREAM, subjects=["floor.work.>"], storage=StorageType.FILE,
                              retention=RetentionPolicy.WORK_QUEUE, duplicate_window=300.0)
        with contextlib.suppress(Exception):
            await self.js.delete_stream(STREAM)  # a fresh queue per run
        await self.js.add_stream(config)
        await self.nc.subscribe(EVENTS, cb=self.on_event)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if self.nomad:
            self.spawn(self.consume(f"{BUILD}.>", "floor-build", self.resolve))
            self.spawn(self.consume(f"{RELEASE}.>", "floor-release", self.register))
            self.spawn(self.consume(f"{ROLLBACK}.>", "floor-rollback", self.revert))
            self.spawn(self.react_to_failures())

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.close()
        await self.nc.close()

    # -- HTTP ----------------------------------------------------------------------------

    async def create_app(self, request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read())
        return web.json_response({"name": body.get("name")}, status=201)

    async def deploy(self, request: web.Request) -> web.Response:
        app = request.match_info["app"]
        body = msgspec.json.decode(await request.read())
        deploy_id = f"f-{next(self.ids)}"
        payload = msgspec.json.encode({"id": deploy_id, "app": app, "image": body["image"]})
        await self.js.publish(f"{BUILD}.{app}", payload,
                              headers={"Nats-Msg-Id": f"{deploy_id}:build"})
        return web.json_response({"id": deploy_id, "status": "pending"}, status=202)

    async def events(self, request: web.Request) -> web.StreamResponse:
        app = request.query.get("app", "")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        transport = request.transport
        assert transport is not None
        clients = self.sse.setdefault(app, set())
        clients.add(transport)
        try:
            # aiohttp says nothing when a streaming client goes away; look now and then.
            while not transport.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(1.0)
        finally:
            clients.discard(transport)
        return response

    async def on_event(self, msg: Msg) -> None:
        # shaman.events.<app>.<type...>
        app = msg.subject.split(".", 3)[2]
        if not self.sse.get(app):
            return
        self.sse_seq += 1
        frame = chunk(b"id: " + str(self.sse_seq).encode() + b"\ndata: " + msg.data + b"\n\n")
        self.sse_pending.setdefault(app, []).append(frame)
        if not self.sse_flush_scheduled:
            # Events that arrive in the same loop iteration go out in one write per client.
            self.sse_flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_sse)

    def flush_sse(self) -> None:
        self.sse_flush_scheduled = False
        pending, self.sse_pending = self.sse_pending, {}
        for app, frames in pending.items():
            data = b"".join(frames)
            for transport in self.sse.get(app, ()):
                if not transport.is_closing():
                    transport.write(data)

    # -- the pipeline behind a deploy -------------------------------------------------------

    async def consume(self, subject: str, durable: str, handle: Any) -> None:
        psub = await self.js.pull_subscribe(subject, durable=durable, stream=STREAM)
        while True:
            try:
                msgs = await psub.fetch(100, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either
                continue
            for msg in msgs:
                self.spawn(self.handle(msg, handle))

    async def handle(self, msg: Msg, handle: Any) -> None:
        try:
            await handle(msgspec.json.decode(msg.data))
        except Exception as exc:  # a benchmark's floor: say it, let JetStream redeliver
            print(f"floor: {msg.subject}: {exc!r}", file=sys.stderr, flush=True)
            return
        await msg.ack()

    async def resolve(self, work: dict[str, Any]) -> None:
        """Image tag → digest with one HEAD, then the release work (the builder's hop)."""
        ref: str = work["image"]
        host, _, rest = ref.partition("/")
        repo, _, tag = rest.rpartition(":")
        async with self.http.head(f"http://{host}/v2/{repo}/manifests/{tag}",
                                  headers={"Accept": MANIFEST_TYPES}) as resp:
            digest = resp.headers["Docker-Content-Digest"]
        work["image"] = f"{host}/{repo}@{digest}"
        await self.js.publish(f"{RELEASE}.{work['app']}", msgspec.json.encode(work),
                              headers={"Nats-Msg-Id": f"{work['id']}:release"})

    async def register(self, work: dict[str, Any]) -> None:
        """Register the job (the scheduler's hop)."""
        assert self.nomad is not None
        job = floor_job(work["app"], work["id"], work["image"])
        async with self.http.post(f"{self.nomad}/v1/jobs", json=job) as resp:
            await resp.read()

    # -- the rollback reactor ---------------------------------------------------------------

    async def react_to_failures(self) -> None:
        """Nomad's event stream → a failed floorrb-* deployment → one JetStream hop."""
        assert self.nomad is not None
        # Nomad filters topics by exact key or `*`, not by prefix: take all deployments.
        params = {"topic": "Deployment", "index": str(10**12)}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.http.get(f"{self.nomad}/v1/event/stream", params=params,
                                 timeout=timeout) as resp:
            buf = b""
            async for data in resp.content.iter_any():
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip() in (b"", b"{}"):
                        continue
                    for event in json.loads(line).get("Events") or []:
                        dep = (event.get("Payload") or {}).get("Deployment") or {}
                        job_id = str(dep.get("JobID", ""))
                        if dep.get("Status") == "failed" and job_id.startswith(
                                ROLLBACK_JOB_PREFIX):
                            await self.js.publish(
                                f"{ROLLBACK}.{job_id}",
                                msgspec.json.encode({"job": job_id, "deployment": dep["ID"]}),
                                headers={"Nats-Msg-Id": f"{dep['ID']}:rollback"})

    async def revert(self, work: dict[str, Any]) -> None:
        """Revert the job to its newest stable version (the scheduler's rollback hop)."""
        assert self.nomad is not None
        job_id = work["job"]
        async with self.http.get(f"{self.nomad}/v1/job/{job_id}/versions") as resp:
            versions = (await resp.json())["Versions"]
        stable = [v["Version"] for v in versions if v.get("Stable")]
        if not stable:
            return
        async with self.http.post(f"{self.nomad}/v1/job/{job_id}/revert",
                                  json={"JobID": job_id, "JobVersion": max(stable)}) as resp:
            await resp.read()


def start_floor(nats_url: str, port: int, nomad_addr: str | None = None,
                log_path: Path | None = None, timeout_s: float = 30.0) -> subprocess.Popen[str]:
    """Start `python -m bench.floor` and return once it serves.

    The NATS URL (it may carry a password) goes through the environment, not argv.
    """
    command = [sys.executable, "-m", "bench.floor", "--port", str(port)]
    if nomad_addr:
        command += ["--nomad", nomad_addr]
    env = dict(os.environ, FLOOR_NATS_URL=nats_url)
    with (log_path.open("ab") if log_path else open(os.devnull, "wb")) as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if "floor ready" not in line:
        stop_process(proc)
        raise RuntimeError(f"the floor server did not start within {timeout_s:.0f}s "
                           f"(log: {log_path})")
    return proc


def stop_process(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def serve(nats_url: str, port: int, nomad_addr: str | None) -> None:
    floor = Floor(nats_url, nomad_addr)
    await floor.start()
    app = web.Application()
    app.router.add_post("/v1/apps", floor.create_app)
    app.router.add_post("/v1/apps/{app}/deploys", floor.deploy)
    app.router.add_get("/v1/events", floor.events)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("floor ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await floor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default=os.environ.get("FLOOR_NATS_URL"),
                        help="NATS URL (default: $FLOOR_NATS_URL)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nomad", help="Nomad address: run the deploy pipeline and the "
                        "rollback reactor too")
    args = parser.parse_args(argv)
    if not args.nats:
        parser.error("--nats or FLOOR_NATS_URL is required")
    asyncio.run(serve(args.nats, args.port, args.nomad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
