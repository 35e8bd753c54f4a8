"""What AgentClient and HumanClient share: identity, outbound posts, inboxes, waits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..mailbox import Mailbox
from ..model import (
    EV_CHANNEL_INVITE_ACK,
    EV_CHANNEL_INVITE_REJECT,
    EV_TEXT,
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    StreamChunk,
)
from ._channel import Channel
from ._inbox import Disconnected, Inboxes, Predicate, seed_timeout
from ._streaming import ChunkCallback, ChunkStream, run_chunk_callbacks

if TYPE_CHECKING:
    from ..api import LocalHub
    from ._hub_client import HubClient


class Identity:
    """One registered identity served by a HubClient connection."""

    def __init__(
        self, *, passport: Passport, resume: Resume, rule: Rule, hub_client: HubClient
    ) -> None:
        assert passport.agent_id is not None
        self._passport = passport
        self._resume = resume
        self._rule = rule
        self._hub_client = hub_client
        self._disconnected = False
        self._inboxes = Inboxes(self._who())
        self._chunk_callbacks: list[ChunkCallback] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._passport.name} {self.agent_id}>"

    @property
    def agent_id(self) -> str:
        assert self._passport.agent_id is not None
        return self._passport.agent_id

    @property
    def passport(self) -> Passport:
        return self._passport

    @property
    def resume(self) -> Resume:
        return self._resume

    @property
    def rule(self) -> Rule:
        return self._rule

    @property
    def hub_client(self) -> HubClient:
        return self._hub_client

    @property
    def hub(self) -> LocalHub | None:
        """The in-process hub (None over a remote link)."""
        return self._hub_client.hub

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    def _who(self) -> str:
        """This identity in error messages: ``HumanClient 'bea' (<agent id>)``."""
        return f"{type(self).__name__} {self._passport.name!r} ({self.agent_id})"

    def _check_connected(self) -> None:
        if self._disconnected:
            raise Disconnected(f"{self._who()} is disconnected")

    async def receive(self, envelope: Envelope) -> None:
        """Handle one delivered envelope (the HubClient acks it afterwards)."""
        raise NotImplementedError

    def _holds(self, envelope: Envelope) -> bool:
        """Whether ``envelope``, still being handled, is already taken in for good.

        Closing the client acks such a delivery rather than leave it to be replayed. An
        agent holds nothing before its turn ends (a turn cut short is owed again).
        """
        return False

    # -- outbound ----------------------------------------------------------------------------

    async def post_envelope(self, envelope: Envelope) -> str:
        """Post any envelope; an empty ``sender_id`` is filled with this identity's id."""
        self._check_connected()
        if envelope.sender_id == "":
            envelope = attrs.evolve(envelope, sender_id=self.agent_id)
        return await self._hub_client.post_envelope(envelope)

    async def send_envelope(self, envelope: Envelope) -> str:
        """Alias of :meth:`post_envelope` (what Channel calls)."""
        return await self.post_envelope(envelope)

    async def send(
        self,
        channel_id: str,
        text: str,
        *,
        audience: Sequence[str] | None = None,
        causation_id: str | None = None,
    ) -> str:
        """Post an ``EV_TEXT`` envelope into ``channel_id`` (a session id); return its id."""
        return await self.post_envelope(
            Envelope(
                session_id=channel_id,
                sender_id=self.agent_id,
                event_type=EV_TEXT,
                event_data={"text": text},
                audience=tuple(audience) if audience is not None else None,
                causation_id=causation_id,
            )
        )

    async def open(
        self,
        *,
        type: str,  # noqa: A002 - the seed's parameter name
        target: str | Sequence[str],
        ttl: str | int | None = None,
        knobs: dict[str, object] | None = None,
        intent: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Channel:
        """Open a session of ``type`` with ``target`` (names or ids) and return its Channel.

        Returns once every invitee has acked (the session is ACTIVE).
        """
        self._check_connected()
        targets = [target] if isinstance(target, str) else list(target)
        ids = []
        for name_or_id in targets:
            ids.append((await self._hub_client.get_agent(name_or_id)).agent_id or name_or_id)
        metadata = await self._hub_client.create_session(
            creator_id=self.agent_id,
            manifest_type=type,
            participants=ids,
            ttl=ttl,
            knobs=knobs,
            intent=intent,
            labels=labels,
        )
        self._inboxes.ensure(metadata.session_id)
        return Channel(metadata, self)

    async def close_channel(self, channel_id: str, reason: str = "") -> SessionMetadata:
        self._check_connected()
        return await self._hub_client.close_session(channel_id, reason=reason)

    async def accept_invite(self, invite: Envelope) -> str:
        """Ack an invite (for clients that do not ack automatically)."""
        return await self._answer_invite(invite, EV_CHANNEL_INVITE_ACK, {})

    async def reject_invite(self, invite: Envelope, reason: str = "") -> str:
        """Refuse an invite: the session is closed with reason ``invite_rejected``."""
        return await self._answer_invite(invite, EV_CHANNEL_INVITE_REJECT, {"reason": reason})

    async def _answer_invite(self, invite: Envelope, kind: str, data: dict[str, Any]) -> str:
        return await self.post_envelope(
            Envelope(
                session_id=invite.session_id,
                sender_id=self.agent_id,
                event_type=kind,
                event_data={"session_id": invite.session_id, **data},
                causation_id=invite.envelope_id,
            )
        )

    # -- streaming ---------------------------------------------------------------------------

    def new_stream(
        self,
        channel_id: str,
        *,
        audience: Sequence[str] | None = None,
        parent_envelope_id: str = "",
    ) -> ChunkStream:
        """A stream of chunks into ``channel_id`` (a session id) from this identity.

        Send chunks with ``await stream.send(text)``, then post the final envelope with
        ``stream_id=stream.stream_id`` (and the same ``audience``): the chunks reach only
        the participants that envelope would reach.
        """
        return ChunkStream(
            self, channel_id, audience=audience, parent_envelope_id=parent_envelope_id
        )

    def on_chunk(self, callback: ChunkCallback) -> None:
        """Call ``callback`` for every streamed chunk received, in registration order.

        Chunks are best effort (see ``StreamChunk.index`` for gaps); an exception in a
        callback is logged and does not stop the others.
        """
        self._chunk_callbacks.append(callback)

    def remove_chunk_callback(self, callback: ChunkCallback) -> None:
        """Detach a chunk callback; no-op if it is not attached."""
        if callback in self._chunk_callbacks:
            self._chunk_callbacks.remove(callback)

    async def receive_chunk(
        self, delta: object, *, channel_id: str, parent_envelope_id: str
    ) -> None:
        """Hub delivery of a streamed chunk (``delta`` is a :class:`StreamChunk`).

        Runs the :meth:`on_chunk` callbacks. Override it to handle chunks otherwise (the
        seed's signature).
        """
        if self._disconnected or not isinstance(delta, StreamChunk):
            await trio.lowlevel.checkpoint()
            return
        await run_chunk_callbacks(self, self._chunk_callbacks, delta)

    # -- waiting -----------------------------------------------------------------------------

    def ensure_channel_inbox(self, channel_id: str) -> Mailbox[Envelope]:
        """The session's inbox, created if needed (create it before sending, then wait)."""
        return self._inboxes.ensure(channel_id)

    def discard_channel_inbox(self, channel_id: str) -> None:
        self._inboxes.discard(channel_id)

    async def wait_for_channel_event(
        self,
        *,
        channel_id: str,
        predicate: Predicate,
        timeout: float = 300.0,  # noqa: ASYNC109 - the seed's parameter
    ) -> Envelope:
        """Wait for an envelope of ``channel_id`` that ``predicate`` accepts.

        Takes only the envelope that matched: others stay for other waiters.

        Raises:
          TimeoutError: nothing matched within ``timeout`` seconds.
          Disconnected: this identity is (or becomes) disconnected (a RuntimeError).
          ProtocolError: the session ended without a match.
        """
        self._check_connected()
        with seed_timeout(timeout, f"session {channel_id}"):
            return await self._inboxes.wait(channel_id, predicate)

    # -- lifecycle ---------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Stop handling deliveries and wake every waiter. Idempotent."""
        await trio.lowlevel.checkpoint()
        self._lose_connection()

    def _lose_connection(self) -> None:
        """:meth:`disconnect`, without a checkpoint (for a loop that is ending). Idempotent."""
        if self._disconnected:
            return
        self._disconnected = True
        self._inboxes.close_all()
        self._on_disconnect()

    def _on_disconnect(self) -> None:
        """Subclasses wake their own waiters."""
