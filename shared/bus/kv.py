"""Typed access to a KV bucket, with revisions for compare-and-set.

`TypedKV[T]` encodes msgspec Structs as JSON. `create` fails if the key
exists; `update(last=rev)` fails if someone wrote since `rev`; both raise
shared.errors.ConflictError. `mutate` is the read-modify-write loop every
racing writer uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.bus.connection import UNAVAILABLE
from shared.errors import BackendUnavailable, ConflictError

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
        """Keys, optionally those under `prefix.` (a NATS subject filter)."""
        try:
            if prefix:
                return list(await self._kv.keys(filters=[f"{prefix}.>"]))
            return list(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []
        except UNAVAILABLE as exc:
            raise BackendUnavailable("nats", f"kv keys failed: {exc!r}") from exc

    async def values(self, prefix: str | None = None) -> list[Entry[T]]:
        out: list[Entry[T]] = []
        for key in await self.keys(prefix):
            entry = await self.get(key)
            if entry is not None:
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
