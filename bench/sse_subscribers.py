"""SSE subscribers as their own process: the receiving side of the SSE fan-out benchmark.

    python -m bench.sse_subscribers --port PORT --app APP --token TOKEN --subscribers N

Opens N connections to `GET /v1/events?app=APP` (plain asyncio protocols, on uvloop when
it is installed: the load generator should cost as little CPU as it can) and prints
`ready` once every one has its answer. Then it reads commands on stdin:
- `go`: forget what arrived so far (the events sent while attaching);
- `stop EXPECTED`: wait (at most 10 s) until EXPECTED frames arrived over all
  connections, print one JSON object with the publish → socket latencies of the sampled
  subscribers and the frames counted, and exit.

Each event carries its publish time (`"source":"bench-<time_ns>"`), so latency is
measured across processes on the same clock. About 100 subscribers are sampled (their
frames parsed); the rest only count frames, which is cheap.

Why a process of its own: in the process that also publishes, 1,000 sockets' reads
starve the publisher (it fell behind the intended rate) and the figure measured the load
generator, not the api. Not a test and not a service: used by bench/api_bench.py only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from bench.stats import summary

MARKER = b'"source":"bench-'


class Counts:
    """Frames received by all subscribers; `done` is set once `target` is reached."""

    def __init__(self) -> None:
        self.total = 0
        self.target: int | None = None
        self.done = asyncio.Event()
        self.latencies: list[float] = []

    def add(self, n: int) -> None:
        self.total += n
        if self.target is not None and self.total >= self.target:
            self.done.set()

    def expect(self, target: int) -> None:
        self.target = target
        if self.total >= target:
            self.done.set()

    def reset(self) -> None:
        self.total = 0
        self.latencies.clear()


class Subscriber(asyncio.Protocol):
    """One SSE connection; a sampled one parses each event's publish time."""

    def __init__(self, counts: Counts, sample: bool) -> None:
        self.buf = b""
        self.counts = counts
        self.sample = sample
        self.ready = asyncio.get_running_loop().create_future()

    def itself(self) -> Subscriber:
        """The protocol factory create_connection wants, for an object made beforehand."""
        return self

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self.ready.done():
            self.ready.set_result(None)
        if not self.sample:
            self.counts.add(data.count(b"\nid: ") + data.startswith(b"id: "))
            return
        self.buf += data
        while True:
            i = self.buf.find(MARKER)
            if i < 0:
                self.buf = self.buf[-len(MARKER):]
                return
            j = self.buf.find(b'"', i + len(MARKER))
            if j < 0:
                self.buf = self.buf[i:]
                return
            self.counts.latencies.append((now - int(self.buf[i + len(MARKER):j])) / 1e6)
            self.counts.add(1)
            self.buf = self.buf[j:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before the answer"))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counts = Counts()
    sample_every = max(1, args.subscribers // 100)
    request = (f"GET /v1/events?app={args.app} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {args.token}\r\nAccept: text/event-stream\r\n\r\n"
               ).encode()
    transports: list[asyncio.BaseTransport] = []
    for start in range(0, args.subscribers, 100):
        waiting = []
        for n in range(start, min(args.subscribers, start + 100)):
            proto = Subscriber(counts, n % sample_every == 0)
            transport, _ = await loop.create_connection(proto.itself, "127.0.0.1", args.port)
            transport.write(request)
            transports.append(transport)
            waiting.append(proto.ready)
        await asyncio.wait_for(asyncio.gather(*waiting), 30)
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    expected = 0
    while line := (await reader.readline()).decode().split():
        if line[0] == "go":
            counts.reset()
        elif line[0] == "stop":
            expected = int(line[1])
            break
    counts.expect(expected)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counts.done.wait(), 10)
    for open_transport in transports:
        open_transport.close()
    return {
        "subscribers": args.subscribers, "frames": counts.total,
        "delivered_ratio": round(min(1.0, counts.total / expected), 4) if expected else 0.0,
        "latency_ms_sampled": summary(counts.latencies), "loop": type(loop).__module__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--subscribers", type=int, default=1000)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
