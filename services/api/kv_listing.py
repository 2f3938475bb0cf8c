"""Listing the keys of a KV bucket, reliably and by prefix.

nats-py's `KeyValue.keys()` is not usable here: it can return no keys at all when the
server delivers everything before the client reads the consumer's info (a race in its
watcher's "initial values done" marker), and it applies `filters` as substrings, so a
subject filter like `app.>` matches nothing. Instead this asks the bucket's stream for
its subjects (`STREAM.INFO` with `subjects_filter`), which is one request and exact;
keys whose latest entry is a delete marker are still listed, so callers `get` each key
and skip the ones that return None (TypedKV does).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec

from shared.bus.connection import UNAVAILABLE, Bus
from shared.bus.kv import Entry, TypedKV
from shared.errors import BackendUnavailable
from shared.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")


async def kv_keys(bus: Bus, bucket: str, prefix: str | None = None) -> list[str]:
    root = f"$KV.{bucket}."
    subject_filter = f"{root}{prefix}.>" if prefix else f"{root}>"
    try:
        info = await bus.js.stream_info(f"KV_{bucket}", subjects_filter=subject_filter)
    except UNAVAILABLE as exc:
        raise BackendUnavailable("nats", f"listing {bucket} failed: {exc!r}") from exc
    subjects = info.state.subjects or {}
    return sorted(subject[len(root):] for subject in subjects)


async def kv_values(
    bus: Bus, kv: TypedKV[T], bucket: str, prefix: str | None = None, *, batch: int = 64
) -> list[Entry[T]]:
    """The live entries; one record that no longer decodes is logged and skipped, so it
    cannot take a whole listing down."""
    keys = await kv_keys(bus, bucket, prefix)
    out: list[Entry[T]] = []
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        entries = await asyncio.gather(*(kv.get(k) for k in chunk), return_exceptions=True)
        for key, entry in zip(chunk, entries, strict=True):
            if isinstance(entry, msgspec.ValidationError | msgspec.DecodeError):
                log.warning("kv record does not decode; skipped", bucket=bucket, key=key,
                            error=str(entry))
            elif isinstance(entry, BaseException):
                raise entry
            elif entry is not None:
                out.append(entry)
    return out
