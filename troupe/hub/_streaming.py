"""Streamed chunks: from a sender to the connections of the final envelope's audience.

A chunk is checked as a post of its sender would be (registered, a participant that has
acked its invite, the session ACTIVE, the session type's turn rules, the audience) and then
handed to each recipient's connection with ``tell_nowait``: the streamer never waits for
anyone. Chunks are best effort: each recipient has at most ``CHUNK_BUFFER`` chunks queued
at its connection, and a chunk beyond that (or one that finds the connection's mailbox
full) is dropped and counted. Nothing is stored: the WAL gets the final envelope, which
carries the stream id.
"""

from __future__ import annotations

from typing import Final

from .._errors import ActorDead, DecodeError, MailboxFull, ProtocolError
from ..model import EV_TEXT, ChunkFrame, Envelope, SessionState, StreamChunk
from ._core import HubCore
from ._delivery import held_back, recipients_of
from ._lanes import ChunkOut, Lane
from ._rules import accepts_inbound
from ._session_parts import admit_addressing, admit_sender

#: Chunks that may wait at a recipient's connection; beyond that they are dropped.
CHUNK_BUFFER: Final = 64
#: The longest chunk text (characters) and stream id the hub forwards.
MAX_CHUNK_CHARS: Final = 16_384
MAX_STREAM_ID_CHARS: Final = 128


def check_chunk(core: HubCore, chunk: StreamChunk) -> Envelope:
    """Refuse a chunk its sender could not post now; the probe envelope it was checked as.

    Raises:
      DecodeError: a field has the wrong type (``field`` names it).
      NotFoundError: the sender or the session is unknown.
      AccessDeniedError: the audience is outside the sender's ``outbound_to``.
      ProtocolError: the chunk is malformed, or the sender may not post in the session now
        (not a participant, invite not acked, session not ACTIVE, not its turn).
    """
    _check_types(chunk)
    if not chunk.stream_id or len(chunk.stream_id) > MAX_STREAM_ID_CHARS:
        raise ProtocolError(
            f"chunk stream_id must be 1 to {MAX_STREAM_ID_CHARS} characters, "
            f"got {len(chunk.stream_id)}"
        )
    if len(chunk.text) > MAX_CHUNK_CHARS:
        raise ProtocolError(
            f"chunk {chunk.index} of stream {chunk.stream_id} has {len(chunk.text)} "
            f"characters; at most {MAX_CHUNK_CHARS}"
        )
    if chunk.index < 0:
        raise ProtocolError(f"chunk index must be >= 0, got {chunk.index}")
    entry = core.directory.get(chunk.session_id)
    md = entry.metadata
    probe = Envelope(
        session_id=chunk.session_id,
        sender_id=chunk.sender_id,
        event_type=EV_TEXT,
        event_data={"text": ""},
        audience=chunk.audience,
    )
    sender, rule = admit_sender(core, md, probe)
    admit_addressing(core, md, probe, sender, rule)
    if md.state is not SessionState.ACTIVE:
        raise ProtocolError(f"session {md.session_id} is not active (it is {md.state.value})")
    if chunk.sender_id in md.pending_acks:
        raise ProtocolError(
            f"agent {sender.name!r} ({chunk.sender_id}) has not acked its invite to "
            f"session {md.session_id}: ack it first"
        )
    if entry.stype is not None and entry.state is not None:
        entry.stype.validate_send(md, probe, entry.state)
    return probe


def _check_types(chunk: StreamChunk) -> None:
    # In process nothing checked the record's types (the wire's decoder does).
    for field in ("session_id", "sender_id", "stream_id", "text", "parent_envelope_id"):
        value = getattr(chunk, field)
        if type(value) is not str:
            raise DecodeError(
                f"StreamChunk.{field}: expected a string, got {type(value).__name__}",
                record="StreamChunk",
                field=field,
            )
    if type(chunk.index) is not int:
        raise DecodeError(
            f"StreamChunk.index: expected an integer, got {type(chunk.index).__name__}",
            record="StreamChunk",
            field="index",
        )
    for i, member in enumerate(chunk.audience or ()):
        if type(member) is not str:
            raise DecodeError(
                f"StreamChunk.audience.{i}: expected a string, got {type(member).__name__}",
                record="StreamChunk",
                field=f"audience.{i}",
            )


def fan_out(core: HubCore, chunk: StreamChunk) -> int:
    """Check ``chunk`` and hand it to every recipient's connection; how many got it.

    Raises:
      NotFoundError, AccessDeniedError, ProtocolError: see :func:`check_chunk` (counted as
        refused).
    """
    streams = core.streams
    try:
        probe = check_chunk(core, chunk)
    except Exception:
        streams.refused += 1
        raise
    entry = core.directory.get(chunk.session_id)
    md = entry.metadata
    registry = core.registry
    sender_name = registry.name_for(chunk.sender_id)
    handed = 0
    for recipient_id in recipients_of(md, probe):
        if recipient_id == chunk.sender_id:
            continue
        rule = registry.rule(recipient_id)
        if rule is None or not accepts_inbound(rule, sender_name):
            continue
        if held_back(md, probe, recipient_id):
            continue
        conn = core.bindings.get(recipient_id)
        if conn is None:
            continue  # not connected: it gets the final envelope on its replay
        lane = streams.lanes.get(recipient_id)
        if lane is None:
            lane = streams.lanes[recipient_id] = Lane()
        if lane.queued >= CHUNK_BUFFER:
            lane.dropped += 1
            streams.dropped += 1
            continue
        try:
            conn.tell_nowait(ChunkOut(ChunkFrame(chunk=chunk, recipient_id=recipient_id), lane))
        except MailboxFull:
            lane.dropped += 1
            streams.dropped += 1
            continue
        except ActorDead:
            continue
        lane.queued += 1
        streams.forwarded += 1
        handed += 1
    return handed
