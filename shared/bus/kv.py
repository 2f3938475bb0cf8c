"""Typed access to a KV bucket, with revisions for compare-and-set.

`TypedKV[T]` encodes msgspec Structs as JSON. `create` fails if the key
exists; `update(last=rev)` fails if someone wrote since `rev`; both raise
shared.errors.ConflictError. `mutate` is the read-modify-write loop every
racing writer uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.bus.connection import UNAVAILABLE
from shared.errors import BackendUnavailable, ConflictError
from shared.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    key: str
    value: T
    revision: int


class TypedKV(Generic[T]):
    def __init__(self, kv: KeyValue, type_: type[T]) -> None:
        self._kv = kv
        self._type = type_
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(type_)
        self._encoder = msgspec.json.Encoder()

    @property
    def raw(self) -> KeyValue:
        return self._kv

    def decode(self, data: bytes) -> T:
        return self._decoder.decode(data)

    async def get(self, key: str) -> Entry[T] | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # includes deleted / purged keys
            return None
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"kv get failed: {exc!r}") from exc
        if entry.value is None or entry.revision is None:
            return None
        return Entry(key, self._decoder.decode(entry.value), entry.revision)

    async def create(self, key: str, value: T) -> int:
        try:
            return await self._kv.create(key, self._encoder.encode(value))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise ConflictError(f"{key} already exists") from exc
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"kv create failed: {exc!r}") from exc

    async def update(self, key: str, value: T, last: int) -> int:
        try:
            return await self._kv.update(key, self._encoder.encode(value), last=last)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise ConflictError(f"{key} changed since revision {last}") from exc
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"kv update failed: {exc!r}") from exc

    async def put(self, key: str, value: T) -> int:
        """Last writer wins; only for keys with a single writer."""
        try:
            return await self._kv.put(key, self._encoder.encode(value))
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"kv put failed: {exc!r}") from exc

    async def delete(self, key: str, last: int | None = None) -> None:
        try:
            await self._kv.delete(key, last=last)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise ConflictError(f"{key} changed since revision {last}") from exc
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"kv delete failed: {exc!r}") from exc

    async def keys(self, prefix: str | None = None) -> list[str]:
        """Keys, optionally those under `prefix.`, sorted.

        Asks the bucket's stream for its subjects (one exact request) instead of
        nats-py's KeyValue.keys(), which can miss everything when the server
        answers before the client reads the consumer info, and matches `filters`
        as substrings. Keys whose latest entry is a delete marker are listed
        too: `values` skips them.
        """
        root = f"$KV.{self._kv._name}."
        subject_filter = f"{root}{prefix}.>" if prefix else f"{root}>"
        try:
            info = await self._kv._js.stream_info(self._kv._stream, subjects_filter=subject_filter)
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"kv keys failed: {exc!r}") from exc
        return sorted(subject[len(root):] for subject in (info.state.subjects or {}))

    async def values(self, prefix: str | None = None, *, batch: int = 64) -> list[Entry[T]]:
        """The live entries, fetched in concurrent batches. A record that no longer
        decodes is logged and skipped, so it cannot take a whole listing down."""
        keys = await self.keys(prefix)
        out: list[Entry[T]] = []
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            entries = await asyncio.gather(*(self.get(k) for k in chunk), return_exceptions=True)
            for key, entry in zip(chunk, entries, strict=True):
                if isinstance(entry, msgspec.ValidationError | msgspec.DecodeError):
                    log.warning("kv record does not decode; skipped", key=key, error=str(entry))
                elif isinstance(entry, BaseException):
                    raise entry
                elif entry is not None:
                    out.append(entry)
        return out

    async def mutate(
        self, key: str, change: Callable[[T], T | None], *, attempts: int = 20
    ) -> Entry[T] | None:
        """Read, apply `change`, write back with the read revision; retry on conflict.

        `change` gets the current value (a copy it may modify) and returns the
        new value, or None to leave the key as it is. Returns the written entry,
        None when the key does not exist or `change` declined.
        """
        for _ in range(attempts):
            current = await self.get(key)
            if current is None:
                return None
            new = change(current.value)
            if new is None:
                return None
            try:
                revision = await self.update(key, new, last=current.revision)
            except ConflictError:
                continue
            return Entry(key, new, revision)
        raise ConflictError(f"{key}: gave up after {attempts} conflicting writes")
