"""A streamed chunk: part of a reply, sent to a session's participants before the reply.

Chunks are best effort and never stored: the WAL holds only the final envelope, which
carries the chunks' ``stream_id`` (``Envelope.stream_id``) so that a reader can replace
what it streamed with what was posted.
"""

from __future__ import annotations

import attrs

from ._convert import to_opt_tuple


@attrs.frozen(kw_only=True)
class StreamChunk:
    """One piece of a streamed reply (for an LLM, a few tokens).

    ``index`` counts the stream's chunks from 0: a gap means the hub or the client dropped
    chunks for a recipient that could not keep up. ``parent_envelope_id`` is the envelope
    the stream answers (a turn's trigger), or ``""``. ``audience`` is the final envelope's
    (``None``: every other participant); only they receive the chunks.
    """

    session_id: str
    sender_id: str
    stream_id: str
    index: int
    text: str
    parent_envelope_id: str = ""
    audience: tuple[str, ...] | None = attrs.field(default=None, converter=to_opt_tuple)
