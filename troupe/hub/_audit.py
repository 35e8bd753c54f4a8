"""The audit writer: persists audit records in batches, off every hot path."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from ..actors import Actor
from ..mailbox import Mailbox
from ..store import Store

#: How many audit records may wait for the writer before the oldest are dropped.
AUDIT_BACKLOG = 65536


@attrs.frozen
class ReadAudit:
    since: int = 0
    limit: int | None = None


def _is_record(msg: object) -> bool:
    return type(msg) is dict


def audit_mailbox(dead_letters: Any) -> Mailbox[Any]:
    return Mailbox(AUDIT_BACKLOG, "drop_oldest", dead_letters=dead_letters, name="audit")


class AuditWriter(Actor[dict[str, Any] | ReadAudit, Any]):
    """Writes every queued record it can see in one store call."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _drain(self, first: dict[str, Any] | None) -> list[dict[str, Any]]:
        batch = [first] if first is not None else []
        mailbox = self.ref.mailbox
        while True:
            try:
                batch.append(mailbox.receive_nowait(match=_is_record))
            except trio.WouldBlock:
                return batch

    async def handle(self, msg: dict[str, Any] | ReadAudit) -> Any:
        if isinstance(msg, ReadAudit):
            return await self.store.read_audit(msg.since, msg.limit)
        await self.store.append_audit(self._drain(msg))
        return None

    async def on_stop(self) -> None:
        batch = self._drain(None)
        if batch:
            await self.store.append_audit(batch)
