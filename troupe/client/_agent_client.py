"""AgentClient: a registered agent plus the default turn handler that drives it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import attrs
import trio

from .._log import USER_CODE
from .._tracing import turn_span
from ..model import (
    EV_TEXT,
    Envelope,
    Passport,
    Resume,
    Rule,
    SessionMetadata,
    SessionState,
    is_protocol_event,
)
from ..session_types import AnySessionType, HistoryItem, ViewPolicy
from ..session_types._views import PolicyFold, ViewFold, start_view
from ._channel import HANDLING_DEPTH
from ._identity import Identity
from ._inbox import ENDINGS
from ._turn import Agent, Turn

if TYPE_CHECKING:
    from ._hub_client import HubClient

log = logging.getLogger("troupe.client")

Observer = Callable[[Envelope], Awaitable[None]]
#: How many envelopes one WAL read of a turn's history asks for at most (a session's first turn
#: in this process folds the WAL before its trigger page by page, never all of it at once).
WAL_PAGE = 1000


@attrs.define(slots=True)
class SessionView:
    """One session's view for one agent, folded up to ``seq``: every envelope of the WAL
    with a seq up to ``seq``, and none after it, is folded into ``fold``."""

    policy: ViewPolicy
    fold: ViewFold | PolicyFold
    seq: int = 0


#: What handles an agent's deliveries: ``await handler(envelope, client)``. The default is
#: :meth:`AgentClient.handle`; a replacement may call it for what it does not handle itself.
Handler = Callable[[Envelope, "AgentClient"], Awaitable[None]]


def _describe(exc: BaseException) -> str:
    """``RuntimeError: my bug``, the way a traceback's last line names an exception."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AgentClient(Identity):
    """What ``HubClient.register`` returns: one agent on one connection.

    Deliveries are acked to the hub once handled. Invites are acked at once unless
    ``auto_ack_invites`` is False (then call :meth:`accept_invite` / :meth:`reject_invite`).
    Then the handler runs: ``handler`` if one was given (see :meth:`set_handler`), else the
    default turn handler, :meth:`handle`: on a substantive envelope
    that gives this agent the floor (the session type's rules, ``can_send``; where the
    session type names the envelope that gave it, only that one), the agent's
    ``respond(turn)`` runs and its answer is posted with ``causation_id`` = the trigger.
    ``None`` or ``""`` is a silent round. A trigger already answered is not answered again (also
    after a reconnect). A ``respond`` that raises is reported (audit ``turn_failed``) and
    nothing is posted for it.

    ``async with`` returns the client and unregisters the agent on exit (as the
    reference's does); the HubClient's own ``close()`` leaves it registered.
    """

    def __init__(
        self,
        *,
        agent: Agent,
        passport: Passport,
        resume: Resume,
        rule: Rule,
        hub_client: HubClient,
        handler: Handler | None = None,
        auto_ack_invites: bool = True,
    ) -> None:
        super().__init__(passport=passport, resume=resume, rule=rule, hub_client=hub_client)
        self._agent = agent
        self._handler = handler
        self._auto_ack_invites = auto_ack_invites
        self._observers: list[Observer] = []
        #: Per session: this agent's view, folded as envelopes arrive (for turn history).
        self._views: dict[str, SessionView] = {}

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unregister()

    @property
    def agent(self) -> Agent:
        return self._agent

    @property
    def handler(self) -> Handler | None:
        """The handler that replaces the default turn handler (None: the default)."""
        return self._handler

    def set_handler(self, handler: Handler | None) -> None:
        """Handle deliveries with ``await handler(envelope, client)`` instead of the default
        turn handler (:meth:`handle`, which it may call); ``None`` restores the default.

        Invites are still acked before it runs unless the agent was registered with
        ``auto_ack_invites=False``.
        """
        self._handler = handler

    def on_envelope(self, callback: Observer) -> None:
        """Also call ``callback`` for every delivery, before the turn handler."""
        self._observers.append(callback)

    async def receive(self, envelope: Envelope) -> None:
        if self._disconnected:
            await trio.lowlevel.checkpoint()
            return
        self._inboxes.put(envelope)
        for observer in self._observers:
            await observer(envelope)
        await self._ack_if_invited(envelope)
        if self._handler is not None:
            await self._handler(envelope, self)
        else:
            await self.handle(envelope)
        if envelope.event_type in ENDINGS:
            self._views.pop(envelope.session_id, None)
        else:
            view = self._views.get(envelope.session_id)
            if view is not None and envelope.seq == view.seq + 1:
                view.fold.fold(envelope)
                view.seq = envelope.seq

    # -- the default turn handler ------------------------------------------------------------

    async def handle(self, envelope: Envelope) -> None:
        """The default turn handler (see the class docstring); invites are acked before it."""
        me = self.agent_id
        kind = envelope.event_type
        if is_protocol_event(kind) or envelope.sender_id == me:
            await trio.lowlevel.checkpoint()
            return
        hc = self._hub_client
        sid = envelope.session_id
        metadata = await hc.get_session(sid)
        if metadata.state is not SessionState.ACTIVE or not await hc.acan_send(sid, me):
            return
        stype = hc.session_type_for(metadata)
        text = stype.render(envelope)
        if text is None:
            return
        owed = await hc.pending_turn(sid, me)
        if owed is not None and owed.triggering_envelope_id not in (None, envelope.envelope_id):
            return  # a stale trigger (a replay): a later envelope gave me the floor
        if await hc.find_envelope_by_causation(
            sid, sender_id=me, causation_id=envelope.envelope_id
        ):
            return  # answered before (a redelivery after a reconnect)
        history = await self._history(metadata, stype, envelope)
        turn = Turn(text=text, envelope=envelope, session=metadata, history=history, client=self)
        token = HANDLING_DEPTH.set(envelope.depth)
        try:
            with turn_span(envelope, me):
                reply = await self._agent.respond(turn)
                answer = self._reply(metadata, stype, envelope, reply)
                if answer is not None and turn.stream_id is not None:
                    answer = attrs.evolve(answer, stream_id=turn.stream_id)  # ends the stream
                if answer is not None:
                    await hc.post_envelope(answer)
        except Exception as exc:
            USER_CODE.error(
                "agent %r failed its turn on %s in session %s",
                self._passport.name,
                envelope.envelope_id,
                sid,
                exc_info=exc,
            )
            hc.note_turn_failure(
                sid, f"agent {self._passport.name!r} failed its turn: {_describe(exc)}"
            )
            await hc.report_turn_failure(
                session_id=sid, agent_id=me, envelope_id=envelope.envelope_id, exc=exc
            )
        finally:
            HANDLING_DEPTH.reset(token)

    def _reply(
        self, metadata: SessionMetadata, stype: AnySessionType, trigger: Envelope, reply: Any
    ) -> Envelope | None:
        if isinstance(reply, str) and not reply:
            return None  # an empty body is a silent round (as in the reference)
        builder = getattr(stype, "build_reply", None)
        if builder is not None:
            built: Envelope | None = builder(metadata, self.agent_id, reply, trigger)
            return built
        if reply is None:
            return None
        if not isinstance(reply, str):
            raise TypeError(
                f"respond() returned {type(reply).__name__}; a {stype.name} session expects "
                "str or None"
            )
        return Envelope(
            session_id=trigger.session_id,
            sender_id=self.agent_id,
            event_type=EV_TEXT,
            event_data={"text": reply},
            causation_id=trigger.envelope_id,
            depth=trigger.depth,
        )

    async def _history(
        self, metadata: SessionMetadata, stype: AnySessionType, trigger: Envelope
    ) -> Callable[[], list[HistoryItem]]:
        """The session type's view of the session before ``trigger``, for this agent (built
        when the turn reads it).

        The view is folded as deliveries arrive; what this agent was not delivered (its own
        posts, what its inbound rules held back) is read from the WAL before the turn, only
        the envelopes after the last one folded. The first turn of a session in this
        process folds the WAL before the trigger, a page at a time.
        """
        sid, me, until = trigger.session_id, self.agent_id, trigger.seq - 1
        policy = stype.default_view_policy(metadata, me)
        view = self._views.get(sid)
        if view is None or view.policy != policy:
            view = self._views[sid] = SessionView(policy, start_view(policy, me, stype.render))
        if view.seq > until:
            # An older trigger (a turn owed again after later envelopes were folded): fold
            # the WAL before it afresh, leaving the session's view as it is.
            view = SessionView(policy, start_view(policy, me, stype.render))
        await self._fold_wal(sid, view, until)
        await self._hub_client.learn_names(list(view.fold.senders()))
        build, name_for = view.fold.freeze(), self._hub_client.name_for
        return lambda: build(name_for)

    async def _fold_wal(self, session_id: str, view: SessionView, until: int) -> None:
        """Fold the WAL's envelopes after ``view.seq`` up to seq ``until`` into ``view``."""
        while view.seq < until:
            end = min(until, view.seq + WAL_PAGE)
            page = await self._hub_client.read_wal(session_id, since=view.seq, until=end)
            for envelope in page:
                if envelope.seq > view.seq:  # a delivery may have folded it meanwhile
                    view.fold.fold(envelope)
                    view.seq = envelope.seq
            view.seq = max(view.seq, end)

    async def resume_pending_turns(self) -> int:
        """Re-run the turns the hub says this agent owes (after a restart); return how many.

        Each trigger is delivered again, through :meth:`receive` like any delivery: the
        ``on_envelope`` observers and the session's inbox see it, then the turn handler,
        which skips a trigger already answered, so this is safe to repeat.
        """
        count = 0
        for turn in await self._hub_client.pending_turns_for(self.agent_id):
            if turn.triggering_envelope_id is None:
                continue
            wal = await self._hub_client.read_wal(turn.session_id)
            trigger = next((e for e in wal if e.envelope_id == turn.triggering_envelope_id), None)
            if trigger is not None:
                await self.receive(trigger)
                count += 1
        return count

    # -- identity ----------------------------------------------------------------------------

    async def unregister(self) -> None:
        """Unregister this agent from the hub and disconnect it."""
        if self._disconnected:
            await trio.lowlevel.checkpoint()
            return
        await self._hub_client.unregister_agent(self.agent_id)
        await self.disconnect()

    async def set_resume(self, resume: Resume) -> None:
        await self._hub_client.set_resume(self.agent_id, resume)
        self._resume = await self._hub_client.get_resume(self.agent_id)

    async def set_skill(self, skill_md: str | None) -> None:
        await self._hub_client.set_skill(self.agent_id, skill_md)

    async def set_rule(self, rule: Rule) -> None:
        await self._hub_client.set_rule(self.agent_id, rule)
        self._rule = await self._hub_client.get_rule(self.agent_id)
