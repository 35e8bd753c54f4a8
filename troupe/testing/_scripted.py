"""``ScriptedAgent``: an agent that answers from a list and records every turn it was given."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import trio

from ..client import Turn

#: One step of a script: text to reply, ``None`` for a silent round, an exception to raise
#: (a failing turn), or a function of the turn returning any of those. (Not a
#: :class:`troupe.Reply`, the session types' reply packet, which a function may return.)
ScriptStep: TypeAlias = str | Exception | Callable[[Turn], Any] | None


class ScriptExhausted(AssertionError):
    """Raised when a :class:`ScriptedAgent` is asked for more turns than its script has."""


class ScriptedAgent:
    """An agent (``respond(turn)``) that plays its script, one item per turn.

    Register it like any agent: ``await hub_client.register(ScriptedAgent(["hi"]), passport)``.

    Args:
      script: the steps, in order (see :data:`ScriptStep`).
      cycle: start over when the script ends (an agent that never runs out); otherwise a
        turn past the end raises :class:`ScriptExhausted` (the turn fails, as a crashing
        agent's would) and :attr:`exhausted` becomes true.
    """

    def __init__(self, script: Iterable[ScriptStep] = (), *, cycle: bool = False) -> None:
        self._script: list[ScriptStep] = list(script)
        if cycle and not self._script:
            raise ValueError("a cycling script needs at least one reply")
        self._queue: deque[ScriptStep] = deque(self._script)
        self._cycle = cycle
        self._changed = trio.Event()
        #: Every turn this agent was given, in order.
        self.turns: list[Turn] = []
        #: True once a turn came after the end of a non-cycling script.
        self.exhausted = False

    def __repr__(self) -> str:
        return f"<ScriptedAgent {len(self.turns)} turns, {len(self._queue)} replies left>"

    @property
    def texts(self) -> list[str]:
        """The text of every turn's trigger, in order."""
        return [turn.text for turn in self.turns]

    @property
    def remaining(self) -> int:
        """Replies not played yet (of the current round, for a cycling script)."""
        return len(self._queue)

    async def respond(self, turn: Turn) -> Any:
        """Record the turn and play the next scripted reply."""
        await trio.lowlevel.checkpoint()
        self.turns.append(turn)
        self._changed.set()
        self._changed = trio.Event()
        if not self._queue and self._cycle:
            self._queue.extend(self._script)
        if not self._queue:
            self.exhausted = True
            raise ScriptExhausted(
                f"turn {len(self.turns)} ({turn.text!r} in session {turn.session_id}) came "
                f"after the end of the script ({len(self._script)} replies)"
            )
        reply = self._queue.popleft()
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(turn)
        return reply

    async def wait_for_turns(self, count: int) -> list[Turn]:
        """Wait until this agent has been given at least ``count`` turns; return them all.

        No deadline of its own: wrap it in ``trio.fail_after``.
        """
        while len(self.turns) < count:
            await self._changed.wait()
        return list(self.turns)
