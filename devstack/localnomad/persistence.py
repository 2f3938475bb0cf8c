"""Snapshots of the state store in `--data-dir`, so a restart keeps jobs and deployments.

After a change the whole state (jobs and their versions, allocations, deployments,
evaluations, service registrations, the node, the raft indexes) is written to
`state.json` atomically (temp file + rename), debounced so a burst of transactions
costs one write, and spaced by a multiple of its own cost. Only objects that transactions
marked dirty are re-encoded; joining and writing happen in a thread, so a snapshot of
thousands of jobs costs the event loop well under a millisecond. Allocations reference
their job version instead of embedding it.
The event buffer is deliberately not saved: a restarted Nomad has an empty one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from .state import State

log = logging.getLogger("localnomad.persistence")

SNAPSHOT = "state.json"
FORMAT = 1


_encode = msgspec.json.Encoder().encode


class SnapshotEncoder:
    """Keeps the encoded bytes of every object and re-encodes only what transactions
    marked dirty (State.dirty), so a snapshot of thousands of jobs costs the changes
    plus one join, not a re-encode of megabytes on the event loop."""

    SECTIONS = ("Versions", "Allocs", "Deployments", "Evals", "Services", "Nodes")

    def __init__(self) -> None:
        self.parts: dict[str, dict[Any, bytes]] = {name: {} for name in self.SECTIONS}
        self._primed = False

    def _take_dirty(self, state: State) -> list[tuple[str, str]]:
        if self._primed:
            dirty, state.dirty = state.dirty, set()
            return list(dirty)
        self._primed = True
        state.dirty.clear()
        everything = [("job", f"{ns}\x00{jid}") for ns, jid in state.versions]
        everything += [("alloc", a) for a in state.allocs]
        everything += [("deployment", d) for d in state.deployments]
        everything += [("eval", e) for e in state.evals]
        everything += [("service", s) for s in state.services]
        everything += [("node", n) for n in state.nodes]
        return everything

    def _refresh_one(self, state: State, kind: str, key: str) -> None:
        if kind == "job":
            ns, _, jid = key.partition("\x00")
            # All versions of a job are one entry: a job change rewrites its few versions.
            versions = state.versions.get((ns, jid))
            if versions:
                self.parts["Versions"][(ns, jid)] = b",".join(_encode(v) for v in versions)
            else:
                self.parts["Versions"].pop((ns, jid), None)
        elif kind == "alloc":
            self._put("Allocs", key, state.allocs.get(key), state)
        elif kind == "deployment":
            self._put("Deployments", key, state.deployments.get(key), state)
        elif kind == "eval":
            self._put("Evals", key, state.evals.get(key), state)
        elif kind == "service":
            self._put("Services", key, state.services.get(key), state)
        elif kind == "node":
            self._put("Nodes", key, state.nodes.get(key), state)

    def _put(self, section: str, key: str, obj: dict[str, Any] | None, state: State) -> None:
        if obj is None:
            self.parts[section].pop(key, None)
            return
        if section == "Allocs":
            job = obj["Job"]
            jkey = (job["Namespace"], job["ID"])
            if any(v is job for v in state.versions.get(jkey, [])):
                obj = dict(obj, Job={"__ref": [job["Namespace"], job["ID"], job["Version"]]})
        self.parts[section][key] = _encode(obj)

    def encode(self, state: State, node_id: str) -> bytes:
        for kind, key in self._take_dirty(state):
            self._refresh_one(state, kind, key)
        return b"".join(b",".join(c) if isinstance(c, list) else c
                        for c in self._assemble(state, node_id))

    async def chunks(self, state: State, node_id: str) -> list[bytes | list[bytes]]:
        """The snapshot as pieces; a list is a section whose items are comma-separated.
        Dirty objects are encoded in small batches that yield to the event loop (an
        object changed meanwhile is dirty again and goes in the next snapshot); joining
        and writing happen in the writer thread."""
        dirty = self._take_dirty(state)
        for start in range(0, len(dirty), 32):
            for kind, key in dirty[start:start + 32]:
                self._refresh_one(state, kind, key)
            if start + 32 < len(dirty):
                await asyncio.sleep(0)
        # Taken last, so the saved index covers every object written above.
        return self._assemble(state, node_id)

    def _assemble(self, state: State, node_id: str) -> list[bytes | list[bytes]]:
        head = _encode({
            "Format": FORMAT, "NodeID": node_id, "Index": state.index,
            "TableIndex": state.table_index,
            "Submissions": list(state.submissions.values()),
            "Namespaces": sorted(state.namespaces)})
        out: list[bytes | list[bytes]] = [head[:-1]]
        for name in self.SECTIONS:
            out.append(b',"' + name.encode() + b'":[')
            out.append(list(self.parts[name].values()))
            out.append(b"]")
        out.append(b"}")
        return out


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


def _write_atomic(path: Path, data: bytes | list[bytes | list[bytes]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        if isinstance(data, bytes):
            fh.write(data)
        else:
            for chunk in data:
                # One C-level join per section: a Python loop over thousands of small
                # writes would fight the event loop for the GIL.
                fh.write(b",".join(chunk) if isinstance(chunk, list) else chunk)
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
        data = await self._encoder.chunks(self.state, self.node_id)
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


