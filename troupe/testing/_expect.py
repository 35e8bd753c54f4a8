"""Test helpers that wait for an envelope to reach an identity, with a deadline."""

from __future__ import annotations

from collections.abc import Callable

import trio

from .._errors import ProtocolError, TroupeError
from ..client import AgentClient, Disconnected, HumanClient
from ..model import Envelope

Identity = AgentClient | HumanClient
Predicate = Callable[[Envelope], bool]


class EnvelopeNotSeen(AssertionError):
    """Raised when no matching envelope arrived in time (by :func:`expect_envelope`)."""


class UnexpectedEnvelope(AssertionError):
    """Raised when a matching envelope arrived after all (by :func:`expect_no_envelope`)."""


def _matcher(
    event_type: str | None, sender_id: str | None, text: str | None, match: Predicate | None
) -> tuple[Predicate, str]:
    wanted = [
        f"{name}={value!r}"
        for name, value in (("event_type", event_type), ("sender_id", sender_id), ("text", text))
        if value is not None
    ]
    if match is not None:
        wanted.append(f"match={getattr(match, '__name__', repr(match))}")

    def predicate(envelope: Envelope) -> bool:
        return (
            (event_type is None or envelope.event_type == event_type)
            and (sender_id is None or envelope.sender_id == sender_id)
            and (text is None or envelope.text == text)
            and (match is None or match(envelope))
        )

    return predicate, ", ".join(wanted) or "any envelope"


async def _describe_wal(identity: Identity, session_id: str) -> str:
    try:
        wal = await identity.hub_client.read_wal(session_id)
    except TroupeError as exc:
        return f"(could not read the WAL: {exc!r})"
    lines = [
        f"  seq {e.seq}: {e.event_type} from {e.sender_id}"
        + (f" {e.text!r}" if e.text is not None else "")
        for e in wal[-10:]
    ]
    return "\n".join(lines) or "  (empty)"


async def expect_envelope(
    identity: Identity,
    session_id: str,
    *,
    event_type: str | None = None,
    sender_id: str | None = None,
    text: str | None = None,
    match: Predicate | None = None,
    within: float = 5.0,
) -> Envelope:
    """Wait until an envelope delivered to ``identity`` in ``session_id`` matches; return it.

    Every given filter must hold (``text`` compares ``event_data["text"]``). It takes the
    envelope out of the identity's session inbox, so a second call waits for the next match;
    envelopes delivered before the call count.

    Args:
      within: seconds to wait (trio's clock: instant under ``MockClock(autojump_threshold=0)``
        when nothing else can happen).

    Raises:
      EnvelopeNotSeen: nothing matched in time, or the session ended first; the message
        lists what was wanted and the session's last envelopes.
    """
    predicate, wanted = _matcher(event_type, sender_id, text, match)
    try:
        return await identity.wait_for_channel_event(
            channel_id=session_id, predicate=predicate, timeout=within
        )
    except (TimeoutError, Disconnected, ProtocolError) as exc:
        why = f"within {within}s" if isinstance(exc, TimeoutError) else f"({exc})"
        tail = await _describe_wal(identity, session_id)
        raise EnvelopeNotSeen(
            f"{identity!r} saw no envelope with {wanted} in session {session_id} {why}; "
            f"the session's WAL ends:\n{tail}"
        ) from None


async def expect_no_envelope(
    identity: Identity,
    session_id: str,
    *,
    event_type: str | None = None,
    sender_id: str | None = None,
    text: str | None = None,
    match: Predicate | None = None,
    within: float = 1.0,
) -> None:
    """Check that no matching envelope reaches ``identity`` in ``session_id`` for ``within`` s.

    Raises:
      UnexpectedEnvelope: one did (it is taken out of the inbox and named in the message).
    """
    predicate, wanted = _matcher(event_type, sender_id, text, match)
    with trio.move_on_after(within):
        try:
            found = await identity.wait_for_channel_event(
                channel_id=session_id, predicate=predicate, timeout=within * 2 + 1
            )
        except (Disconnected, ProtocolError):
            return  # the session ended or the client disconnected: nothing more can arrive
        raise UnexpectedEnvelope(
            f"{identity!r} got an envelope with {wanted} in session {session_id}: "
            f"seq {found.seq} {found.event_type} from {found.sender_id}"
        )
