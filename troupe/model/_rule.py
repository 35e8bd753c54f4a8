"""Per-agent rules, enforced only at the hub — reference §2.4 (troupe enforces ``rate`` too)."""

from __future__ import annotations

from typing import Final

import attrs

from ._convert import to_tuple

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: The longest duration (a TTL) troupe takes: about ten years, in seconds. Its timestamps
#: stay far inside what ``datetime`` can write (year 9999).
MAX_DURATION_S: Final = 3650 * 86400


def parse_duration(value: str | int) -> int:
    """Seconds in ``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"60"`` or an int; ``""`` is 0.

    0 means "none" (a TTL of 0: no expiry).

    Raises:
      ValueError: anything else (``"abc"``, ``"5x"``, ``"1.5h"``, a negative duration, one
        longer than :data:`MAX_DURATION_S`), naming the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0
        unit = _UNITS.get(text[-1])
        digits = text[:-1] if unit is not None else text
        magnitude = digits.removeprefix("-")
        if not magnitude.isdigit() or not magnitude.isascii():
            raise ValueError(
                f"not a duration: {value!r:.80} (use e.g. '30s', '15m', '2h', '1d' or 60)"
            )
        # More digits than any allowed duration has: refused before int() reads them all.
        seconds = int(digits) * (unit or 1) if len(magnitude) <= 12 else MAX_DURATION_S + 1
        if digits.startswith("-"):
            seconds = -abs(seconds)
    else:
        raise ValueError(f"not a duration: {value!r:.80}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r:.80}")
    if seconds > MAX_DURATION_S:
        raise ValueError(
            f"duration {value!r:.80} exceeds the longest allowed, {MAX_DURATION_S}s (~10 years)"
        )
    return seconds


@attrs.frozen(kw_only=True)
class SessionTypeAccess:
    """Which session types an agent may open (``initiate``) or join (``accept``); globs."""

    initiate: tuple[str, ...] = attrs.field(default=("*",), converter=to_tuple)
    accept: tuple[str, ...] = attrs.field(default=("*",), converter=to_tuple)


@attrs.frozen(kw_only=True)
class AccessBlock:
    """Glob patterns over agent names: who may reach me, whom I may address."""

    inbound_from: tuple[str, ...] = attrs.field(default=("*",), converter=to_tuple)
    outbound_to: tuple[str, ...] = attrs.field(default=("*",), converter=to_tuple)
    session_types: SessionTypeAccess = attrs.field(factory=SessionTypeAccess)


@attrs.frozen(kw_only=True)
class RateBlock:
    """A token bucket: ``per_minute`` refill, ``burst`` capacity; ``per_minute=0`` is off."""

    per_minute: int = 0
    burst: int = 0


@attrs.frozen(kw_only=True)
class InboxBlock:
    """How many substantive envelopes may wait for an agent, and what happens beyond that.

    Waiting means delivered to the agent's connection and not yet acked. At ``max_pending``:
    ``overflow="block"`` (the default) makes the poster wait for room, as a trio channel
    makes its sender wait: at most ``block_timeout`` seconds (then ``InboxFull``; ``None``
    waits as long as it takes), and cancellable; ``"reject"`` refuses the post at once
    (``InboxFull``, the reference's behaviour); ``"drop_newest"`` accepts it into the WAL
    but does not deliver it to this agent now (a dead letter, audit ``inbox_overflow``):
    the agent gets it with its next replay. The reference's ``"drop_oldest"`` is refused:
    what was delivered cannot be taken back.

    A blocked post never waits on an agent that is itself waiting to post (its turn holds
    its inbox): two agents answering each other with both inboxes full do not deadlock. So
    ``max_pending`` can be passed by as many posts as wait on each other at once.

    ``high_water`` ``None`` means 80% of ``max_pending`` (at least 1); ``<= 0`` disables the
    pressure signal. ``max_pending=0`` disables the cap.
    """

    max_pending: int = 1000
    overflow: str = "block"
    high_water: int | None = None
    block_timeout: float | None = 60.0

    def __attrs_post_init__(self) -> None:
        if self.overflow == "drop_oldest":
            raise ValueError(
                "inbox overflow 'drop_oldest' is not supported: deliveries already sent to a "
                "client cannot be taken back; use 'block', 'reject' or 'drop_newest'"
            )
        if self.overflow not in ("block", "reject", "drop_newest"):
            raise ValueError(
                f"inbox overflow must be 'block', 'reject' or 'drop_newest', got {self.overflow!r}"
            )
        timeout = self.block_timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(
                f"inbox block_timeout must be a positive number of seconds or None, got {timeout!r}"
            )

    @property
    def effective_high_water(self) -> int | None:
        if self.high_water is None:
            return max(1, self.max_pending * 8 // 10) if self.max_pending > 0 else None
        return self.high_water if self.high_water > 0 else None


@attrs.frozen(kw_only=True)
class LimitsBlock:
    """Numeric caps (0 disables one) and defaults for an agent."""

    max_concurrent_sessions: int = 0
    max_concurrent_tasks: int = 0
    session_ttl_default: str = "2h"
    task_ttl_default: str = "15m"
    rate: RateBlock = attrs.field(factory=RateBlock)
    delegation_depth: int = 5
    inbox: InboxBlock = attrs.field(factory=InboxBlock)


@attrs.frozen(kw_only=True)
class Rule:
    """An agent's rule; permissive by default; ``version`` is bumped by the hub."""

    version: int = 1
    access: AccessBlock = attrs.field(factory=AccessBlock)
    limits: LimitsBlock = attrs.field(factory=LimitsBlock)
