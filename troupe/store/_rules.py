"""Checks both engines apply in the same words, so memory and SQLite fail alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .._errors import DecodeError, StoreError
from ..model import Envelope, SessionMetadata, dumps
from ._protocol import AgentRecord


def agent_id_of(record: AgentRecord) -> str:
    """The id an agent record is stored under.

    Raises:
      StoreError: the passport was never stamped with an ``agent_id``.
    """
    agent_id = record.passport.agent_id
    if not agent_id:
        raise StoreError(f"agent {record.passport.name!r} has no agent_id; the hub stamps it")
    return agent_id


def unknown_agent(agent_id: str) -> StoreError:
    return StoreError(f"unknown agent {agent_id!r}")


class DuplicateKey(StoreError):
    """Raised when an append repeats an idempotency key the session has accepted already
    (nothing of the append is written)."""

    def __init__(self, session_id: str, key: str) -> None:
        super().__init__(f"session {session_id!r} already accepted idempotency key {key!r}")
        self.session_id = session_id
        #: The idempotency key (without the ``k:`` of its dedup key).
        self.key = key


def check_append(
    session_id: str,
    last_seq: int,
    envelopes: Sequence[Envelope],
    metadata: SessionMetadata | None,
) -> None:
    """Refuse an append that would leave a gap, a repeat or a stranger in the session's WAL.

    Args:
      session_id: the session appended to.
      last_seq: the highest ``seq`` already in its WAL (0 when empty).
      envelopes: the envelopes to append, in order.
      metadata: the metadata saved with them, if any.

    Raises:
      StoreError: a ``seq`` that does not continue the WAL, an envelope or metadata of
        another session, or one idempotency key twice in the batch.
    """
    keys: set[str] = set()
    for expected, env in enumerate(envelopes, start=last_seq + 1):
        if env.session_id != session_id:
            raise StoreError(
                f"envelope {env.envelope_id!r} belongs to session {env.session_id!r}, "
                f"not {session_id!r}"
            )
        if env.seq != expected:
            raise StoreError(
                f"session {session_id!r}: envelope {env.envelope_id!r} has seq {env.seq}, "
                f"expected {expected} (the WAL must continue with no gap or repeat)"
            )
        key = env.idempotency_key
        if key is not None:
            if key in keys:
                raise DuplicateKey(session_id, key)
            keys.add(key)
    if metadata is not None and metadata.session_id != session_id:
        raise StoreError(
            f"metadata of session {metadata.session_id!r} appended to session {session_id!r}"
        )


def check_window(since: int, limit: int | None) -> None:
    """Refuse a negative audit window (``since`` and ``limit`` count records)."""
    if since < 0 or (limit is not None and limit < 0):
        raise ValueError(f"since and limit must not be negative, got {since=} {limit=}")


def check_audit(records: Sequence[dict[str, Any]]) -> None:
    """Refuse audit records that are not JSON objects with ``at`` and ``kind``."""
    for record in records:
        if not isinstance(record, dict) or "at" not in record or "kind" not in record:
            raise StoreError(f"an audit record needs 'at' and 'kind', got {record!r}")


def json_bytes(value: Any, what: str) -> bytes:
    """Encode JSON data the store keeps opaque (snapshots, checkpoints, kv values, audit).

    Raises:
      StoreError: ``value`` is not JSON data; the message names ``what``.
    """
    try:
        encoded = dumps(value)
    except DecodeError as exc:
        raise StoreError(f"{what} is not JSON data: {exc}") from exc
    # orjson (3.13) hands back its whole output buffer, about 4 KiB however short the JSON:
    # kept in a MemoryStore, one per audit record and snapshot, that is most of a hub's
    # memory. A copy is exactly as long as the JSON.
    return bytes(memoryview(encoded))


def json_value(data: str | bytes) -> Any:
    """Decode what :func:`json_bytes` encoded (the store's own rows: no checks needed)."""
    return orjson.loads(data)
