"""HumanClient: a participant driven by a person (a UI), not by ``respond``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from .._errors import MailboxClosed, NetworkError
from ..mailbox import Mailbox
from ..model import EV_CHANNEL_INVITE, Envelope, Passport, Resume, Rule, SessionMetadata
from ._identity import Identity
from ._inbox import Predicate, seed_timeout, wait_in

if TYPE_CHECKING:
    from ..api import LocalHub
    from ._hub_client import HubClient

log = logging.getLogger("troupe.client")

EnvelopeCallback = Callable[[Envelope], Awaitable[None]]

#: Envelopes the pull queue keeps for next_envelope()/envelopes() (the oldest are dropped).
PULL_CAPACITY = 1024


class HumanClient(Identity):
    """What ``HubClient.register_human`` returns (the seed's API, on trio).

    Every delivery is acked to the hub after it was queued for pulling and every push
    callback ran. Invites are acked at once unless ``auto_ack_invites`` is False (then call
    :meth:`accept_invite` / :meth:`reject_invite`).

    The pull queue keeps the newest ``PULL_CAPACITY`` envelopes (``drop_oldest``): a UI that
    stops pulling loses the oldest, never blocks the hub. ``next_envelope(predicate=...)``
    takes the first match and leaves the others queued (the seed discarded them; then two
    consumers could lose each other's envelopes).
    """

    def __init__(
        self,
        *,
        passport: Passport,
        resume: Resume,
        rule: Rule,
        hub: LocalHub | None = None,
        hub_client: HubClient,
        auto_ack_invites: bool = True,
    ) -> None:
        # ``hub`` is the seed's parameter; the hub is always ``hub_client``'s (None remote).
        if hub is not None and hub is not hub_client.hub:
            raise ValueError("HumanClient(hub=...) must be the hub its hub_client talks to")
        super().__init__(passport=passport, resume=resume, rule=rule, hub_client=hub_client)
        self._auto_ack_invites = auto_ack_invites
        self._callbacks: list[EnvelopeCallback] = []
        self._pull: Mailbox[Envelope] = Mailbox(PULL_CAPACITY, "drop_oldest", name="pull")
        #: Ids of the deliveries queued for pulling whose callbacks are still running.
        self._held: set[str] = set()

    async def receive(self, envelope: Envelope) -> None:
        """Hub delivery: ack invites (unless disabled), queue, then run push callbacks."""
        if self._disconnected:
            await trio.lowlevel.checkpoint()
            return
        if (
            self._auto_ack_invites
            and envelope.event_type == EV_CHANNEL_INVITE
            and envelope.sender_id != self.agent_id
        ):
            try:
                await self.accept_invite(envelope)
            except NetworkError as exc:
                log.warning("%s could not ack invite %s: %s", self, envelope.envelope_id, exc)
        self._inboxes.put(envelope)
        self._pull.send_nowait(envelope)
        self._held.add(envelope.envelope_id)
        try:
            for callback in list(self._callbacks):
                try:
                    await callback(envelope)
                except Exception:
                    log.exception(
                        "human callback raised: human=%s session=%s event=%s",
                        self._passport.name,
                        envelope.session_id,
                        envelope.event_type,
                    )
        finally:
            self._held.discard(envelope.envelope_id)

    def _holds(self, envelope: Envelope) -> bool:
        """Queued for this person (its callbacks may still run): closing acks it."""
        return envelope.envelope_id in self._held

    def on_envelope(self, callback: EnvelopeCallback) -> None:
        """Call ``callback`` for every delivery, in registration order; errors are logged."""
        self._callbacks.append(callback)

    def remove_envelope_callback(self, callback: EnvelopeCallback) -> None:
        """Detach a callback; no-op if it is not attached."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    async def next_envelope(
        self,
        *,
        predicate: Predicate | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the seed's parameter
    ) -> Envelope:
        """The next delivered envelope (that ``predicate`` accepts).

        Unlike the seed, which discarded the envelopes its predicate rejected on the way,
        this takes only the first match: the others stay queued, in order, for later
        ``next_envelope()`` calls and ``envelopes()`` (so two consumers with different
        predicates cannot lose each other's envelopes). A ``timeout`` of zero or less does
        not wait.

        Raises:
          TimeoutError: nothing matched within ``timeout`` seconds.
          Disconnected: this identity is (or becomes) disconnected (a RuntimeError).
        """
        self._check_connected()
        what = f"the inbox of {self._passport.name!r}"
        with seed_timeout(timeout, what):
            return await wait_in(
                self._pull, predicate, what=what, who=self._who(), disconnected=lambda: True
            )

    async def envelopes(self) -> AsyncIterator[Envelope]:
        """Every delivered envelope, in arrival order, until disconnect."""
        while True:
            try:
                envelope = await self._pull.receive()
            except MailboxClosed:
                return
            yield envelope

    def _on_disconnect(self) -> None:
        self._pull.close()

    async def close_channel(self, channel_id: str, reason: str = "human_closed") -> SessionMetadata:
        """Close a session this human is in (reason ``human_closed`` by default)."""
        return await super().close_channel(channel_id, reason)
