"""Snapshots of the state store in `--data-dir`, so a restart keeps jobs and deployments.

After a change the whole state (jobs and their versions, allocations, deployments,
evaluations, service registrations, the node, the raft indexes) is written to
`state.json` atomically (temp file + rename), debounced so a burst of transactions
costs one write, and spaced by a multiple of its own cost. Objects whose ModifyIndex did
not move reuse their bytes from the previous snapshot. Allocations reference their job
version instead of embedding it.
The event buffer is deliberately not saved: a restarted Nomad has an empty one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import msgspec

from .state import State

log = logging.getLogger("localnomad.persistence")

SNAPSHOT = "state.json"
FORMAT = 1


_encode = msgspec.json.Encoder().encode


class SnapshotEncoder:
    """Encodes the state, re-encoding only objects whose ModifyIndex moved since the last
    snapshot. Every write goes through a transaction that stamps ModifyIndex, so an
    unchanged index means unchanged bytes; with thousands of jobs a snapshot costs a
    few dictionary lookups per object instead of re-encoding megabytes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], tuple[tuple[object, ...], bytes]] = {}

    def _part(self, new_cache: dict[tuple[str, ...], tuple[tuple[object, ...], bytes]],
              key: tuple[str, ...], stamp: tuple[object, ...], make: object) -> bytes:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            new_cache[key] = hit
            return hit[1]
        data = _encode(make() if callable(make) else make)
        new_cache[key] = (stamp, data)
        return data

    def encode(self, state: State, node_id: str) -> bytes:
        cache: dict[tuple[str, ...], tuple[tuple[object, ...], bytes]] = {}
        versions = []
        for (ns, jid), vs in state.versions.items():
            for v in vs:
                versions.append(self._part(
                    cache, ("v", ns, jid, str(v["Version"]), str(v["CreateIndex"])),
                    (v["ModifyIndex"], v["Stable"], v["Status"]), v))
        allocs = []
        for aid, alloc in state.allocs.items():
            def with_ref(alloc: dict[str, object] = alloc) -> dict[str, object]:
                job = alloc["Job"]
                assert isinstance(job, dict)
                key = (job["Namespace"], job["ID"])
                if any(v is job for v in state.versions.get(key, [])):
                    return dict(alloc, Job={"__ref": [job["Namespace"], job["ID"],
                                                      job["Version"]]})
                return alloc

            allocs.append(self._part(cache, ("a", aid), (alloc["ModifyIndex"],), with_ref))
        deps = [self._part(cache, ("d", k), (d["ModifyIndex"],), d)
                for k, d in state.deployments.items()]
        evals = [self._part(cache, ("e", k), (e["ModifyIndex"],), e)
                 for k, e in state.evals.items()]
        self._cache = cache
        head = _encode({
            "Format": FORMAT, "NodeID": node_id, "Index": state.index,
            "TableIndex": state.table_index,
            "Submissions": list(state.submissions.values()),
            "Services": list(state.services.values()), "Nodes": list(state.nodes.values()),
            "Namespaces": sorted(state.namespaces)})
        out = bytearray(head[:-1])
        for name, parts in (("Versions", versions), ("Allocs", allocs),
                            ("Deployments", deps), ("Evals", evals)):
            out += b',"' + name.encode() + b'":['
            out += b",".join(parts)
            out += b"]"
        out += b"}"
        return bytes(out)


def snapshot(state: State, node_id: str) -> bytes:
    return SnapshotEncoder().encode(state, node_id)


def restore(state: State, data: bytes) -> str | None:
    """Load a snapshot into an empty state; returns the node ID it had."""
    snap = msgspec.json.decode(data)
    state.index = snap["Index"]
    state.table_index.update(snap["TableIndex"])
    for v in snap["Versions"]:
        key = (v["Namespace"], v["ID"])
        state.versions.setdefault(key, []).append(v)
    for key, versions in state.versions.items():
        versions.sort(key=lambda v: -v["Version"])
        state.jobs[key] = versions[0]
    for sub in snap.get("Submissions") or []:
        state.submissions[(sub["Namespace"], sub["JobID"], sub["Version"])] = sub
    for alloc in snap["Allocs"]:
        ref = alloc["Job"].get("__ref") if isinstance(alloc["Job"], dict) else None
        if ref is not None:
            ns, jid, version = ref
            alloc["Job"] = next(v for v in state.versions[(ns, jid)] if v["Version"] == version)
        state.allocs[alloc["ID"]] = alloc
        state.allocs_by_job.setdefault((alloc["Namespace"], alloc["JobID"]), set()).add(
            alloc["ID"])
    for dep in sorted(snap["Deployments"], key=lambda d: d["CreateIndex"]):
        state.deployments[dep["ID"]] = dep
        state.deployments_by_job.setdefault((dep["Namespace"], dep["JobID"]), []).append(
            dep["ID"])
    for ev in sorted(snap["Evals"], key=lambda e: e["CreateIndex"]):
        state.evals[ev["ID"]] = ev
        state.evals_by_job.setdefault((ev["Namespace"], ev["JobID"]), []).append(ev["ID"])
    for reg in snap["Services"]:
        state.services[reg["ID"]] = reg
    for node in snap["Nodes"]:
        state.nodes[node["ID"]] = node
    state.namespaces.update(snap.get("Namespaces") or [])
    node_id = snap.get("NodeID")
    return str(node_id) if node_id else None


def load(data_dir: Path, state: State) -> str | None:
    path = data_dir / SNAPSHOT
    if not path.exists():
        return None
    return restore(state, path.read_bytes())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Snapshotter:
    """Debounced writer: at most one snapshot per `delay_s` after a change."""

    def __init__(self, data_dir: Path, state: State, node_id: str, delay_s: float = 0.05):
        self.path = data_dir / SNAPSHOT
        self.state = state
        self.node_id = node_id
        self.delay_s = delay_s
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._encoder = SnapshotEncoder()
        state.on_commit.append(lambda _txn: self._dirty.set())

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="snapshotter")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pause = self.delay_s
        while True:
            await self._dirty.wait()
            await asyncio.sleep(pause)
            self._dirty.clear()
            started = loop.time()
            await self.flush()
            # Encoding a big state blocks the loop; spacing writes by a multiple of that
            # cost keeps snapshots under ~20% of the loop however large the state grows.
            pause = max(self.delay_s, 4 * (loop.time() - started))

    async def flush(self) -> None:
        data = self._encoder.encode(self.state, self.node_id)
        try:
            await asyncio.to_thread(_write_atomic, self.path, data)
        except OSError:
            log.exception("snapshot write failed path=%s", self.path)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


