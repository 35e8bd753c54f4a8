"""The audit writer: persists audit records in batches, off every hot path.

A store that refuses a batch (a full disk, a failing device) does not crash the writer: it
keeps the records and tries again with backoff, taking what arrived meanwhile into the same
write. A crash would only lose the batch, and a few in a row would exhaust the hub's restart
allowance and stop the whole hub over its audit log.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from .._errors import StoreError
from ..actors import Actor, Message, Refused
from ..mailbox import Mailbox
from ..store import Store

log = logging.getLogger("troupe.hub.audit")

#: How many audit records may wait for the writer before the oldest are dropped.
AUDIT_BACKLOG = 65536
#: First and longest pause between attempts to write records the store refused.
RETRY_S = 0.1
RETRY_MAX_S = 5.0


@attrs.frozen
class ReadAudit(Message[list[dict[str, Any]]]):
    """The audit records after the first ``since`` (at most ``limit``), queued ones too."""

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
        #: Records taken from the mailbox and not yet written (the store refused them).
        self.unwritten: list[dict[str, Any]] = []

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
            try:
                return await self.store.read_audit(msg.since, msg.limit)
            except StoreError as exc:
                return Refused(exc)
        self.unwritten.extend(self._drain(msg))
        delay = RETRY_S
        while self.unwritten:
            try:
                await self.store.append_audit(self.unwritten)
            except StoreError as exc:
                dropped = max(0, len(self.unwritten) - AUDIT_BACKLOG)
                del self.unwritten[:dropped]
                log.warning(
                    "audit: the store refused %d record(s) (%s); retrying in %ss%s",
                    len(self.unwritten),
                    exc,
                    delay,
                    f", dropped the {dropped} oldest" if dropped else "",
                )
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self.unwritten.extend(self._drain(None))
            else:
                self.unwritten = []
        return None

    async def on_stop(self) -> None:
        batch = [*self.unwritten, *self._drain(None)]
        if batch:
            await self.store.append_audit(batch)
