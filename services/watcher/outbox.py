"""Publishing a deploy's events and commands exactly once, across crashes.

`Outbox.publish_once(deploy_id, step, ...)` publishes with `Nats-Msg-Id =
<deploy_id>:<step>` unless the deploy's notes say the step is done, then notes it.
Callers write the outcome (CAS on the deploy record) before they publish, so a crash
between the two leaves the outcome written and the step missing; the next reconcile
publishes it, and JetStream's duplicate window drops the copy if the first publish did
land (notes.py explains the scheme). Notes are updated with KV revisions, so two watcher
copies never erase each other's steps.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from services.watcher.notes import DeployNotes, msg_id, notes_key
from shared.bus import Bus, TypedKV
from shared.errors import ConflictError
from shared.events.base import Event

_ATTEMPTS = 20


class Outbox:
    def __init__(self, bus: Bus, notes: TypedKV[DeployNotes]) -> None:
        self.bus = bus
        self.notes = notes

    async def read(self, deploy_id: str) -> DeployNotes:
        entry = await self.notes.get(notes_key(deploy_id))
        return entry.value if entry is not None else DeployNotes(deploy_id=deploy_id)

    async def update(self, deploy_id: str, change: Callable[[DeployNotes], bool]) -> DeployNotes:
        """Apply `change` (returns False to write nothing) with a create/CAS retry loop."""
        key = notes_key(deploy_id)
        for _ in range(_ATTEMPTS):
            entry = await self.notes.get(key)
            notes = entry.value if entry is not None else DeployNotes(deploy_id=deploy_id)
            if not change(notes):
                return notes
            try:
                if entry is None:
                    await self.notes.create(key, notes)
                else:
                    await self.notes.update(key, notes, last=entry.revision)
            except ConflictError:
                continue
            return notes
        raise ConflictError(f"watcher notes of {deploy_id}: too many concurrent writers")

    async def mark(self, deploy_id: str, step: str) -> DeployNotes:
        def add(notes: DeployNotes) -> bool:
            if step in notes.published:
                return False
            notes.published = [*notes.published, step]
            return True

        return await self.update(deploy_id, add)

    async def publish_event_once(self, notes: DeployNotes, step: str, event: Event) -> bool:
        """Publish a timeline event for this step unless already done; True if published now."""
        if notes.done(step):
            return False
        await self.bus.publish_event(event, msg_id=msg_id(notes.deploy_id, step))
        updated = await self.mark(notes.deploy_id, step)
        notes.published = updated.published
        return True

    async def publish_command_once(
        self, notes: DeployNotes, step: str, subject: str, command: msgspec.Struct
    ) -> bool:
        if notes.done(step):
            return False
        await self.bus.publish_command(subject, command, msg_id=msg_id(notes.deploy_id, step))
        updated = await self.mark(notes.deploy_id, step)
        notes.published = updated.published
        return True
