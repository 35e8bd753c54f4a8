"""Shards and leases: the sans-IO core of a cluster node's ownership (no trio, no I/O).

Rules:

- A cluster has a fixed number of shards, chosen when it is created and stored with it; a
  session's shard is ``crc32(session_id) % shards`` (:func:`shard_of`): stable across
  processes, machines and Python versions (never ``hash()``, which is salted per process).
- A node *holds* a shard from a successful claim (epoch + 1 by the coordinator's clock) until
  its lease runs out or it lets it go. It renews every lease it holds on each tick.
- It *serves* its shards only until a local deadline on its own clock: the start of its last
  successful renewal + ``lease_s`` - ``margin_s``. The start, not the answer: the
  coordinator's lease began no earlier than the request was sent, so the node stops before
  the lease ends by at least ``margin_s`` whatever the call's latency. A node that cannot
  renew (paused, cut off, slow) therefore stops serving before anyone else may claim.
- Fair share: with ``live`` nodes a node wants ``ceil(shards / live)``. It claims expired
  shards up to that. It lets shards go in two cases, each with hysteresis (a difference of
  one shard between nodes moves nothing, so shards do not flap):

  - it holds at least share + 2: it lets go of all above its share at once (a node that
    held everything when another joined);
  - it holds more than ``floor(shards / live)`` and at least 2 more than the live node
    that holds fewest (a joiner, or a node back from a pause, that the first case leaves
    short when every other node holds share or share + 1): it lets go of one shard per
    tick, which the short node claims, until no live node holds 2 more than another.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

#: PostgreSQL ends a transaction idle this long (s); a paused owner's ``FOR SHARE`` locks last
#: at most that long, so a lease must be longer or takeover waits out the pause.
IDLE_IN_TRANSACTION_S: Final = 5.0
#: The shortest cluster key (``ClusterConfig.secret``) a node accepts.
MIN_SECRET_CHARS: Final = 16
#: A node lets shards go only when it holds this many more than its fair share.
HYSTERESIS: Final = 2


def shard_of(session_id: str, shards: int) -> int:
    """The shard of ``session_id`` in a cluster of ``shards`` shards (crc32, stable)."""
    return zlib.crc32(session_id.encode()) % shards


def fair_share(shards: int, live: int) -> int:
    """How many shards one of ``live`` nodes may hold: ``ceil(shards / live)``."""
    return math.ceil(shards / max(live, 1))


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """One node's place in a cluster and its timing.

    Args:
      node_id: this node's name, unique in the cluster (letters, digits, ``._-``; ≤ 63).
      address: what this node advertises to the others (e.g. ``ws://host:port``).
      shards: the cluster's shard count; the first node creates the cluster with it, and a
        node with another count is refused.
      lease_s: how long a claim or renewal holds a shard (the coordinator's clock); must
        exceed :data:`IDLE_IN_TRANSACTION_S` + ``margin_s``.
      tick_s: seconds between renewals; at most (``lease_s`` - ``margin_s``) / 2, so one
        missed renewal does not stop a node serving.
      margin_s: how long before its lease ends a node that could not renew stops serving.
      secret: the cluster key every node shares (at least :data:`MIN_SECRET_CHARS`
        characters; never shown in a repr). With it the node routes (``troupe.cluster``'s
        ``_routing``): it forwards requests for other nodes' sessions to their owner over
        links that prove the key, and hints deliveries to recipients bound elsewhere.
        Without it (None) it refuses them with ``NotOwner``, as before.

    Raises:
      ValueError: a field out of its range (the message names it).
    """

    node_id: str
    address: str = ""
    shards: int = 32
    lease_s: float = 10.0
    tick_s: float = 2.0
    margin_s: float = 2.0
    secret: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.secret is not None and (
            not isinstance(self.secret, str) or len(self.secret) < MIN_SECRET_CHARS
        ):
            raise ValueError(
                f"secret (the cluster key) must be a string of at least {MIN_SECRET_CHARS} "
                "characters"
            )
        if not (
            isinstance(self.node_id, str)
            and 0 < len(self.node_id) <= 63
            and all(c.isalnum() or c in "._-" for c in self.node_id)
        ):
            raise ValueError(
                f"node_id must be 1 to 63 letters, digits, '.', '_' or '-', got {self.node_id!r}"
            )
        if isinstance(self.shards, bool) or not isinstance(self.shards, int):
            raise ValueError(f"shards must be an int, got {self.shards!r}")
        if not 1 <= self.shards <= 4096:
            raise ValueError(f"shards must be between 1 and 4096, got {self.shards!r}")
        if not self.margin_s > 0:
            raise ValueError(f"margin_s must be > 0, got {self.margin_s!r}")
        if not self.lease_s > IDLE_IN_TRANSACTION_S + self.margin_s:
            raise ValueError(
                f"lease_s must exceed idle_in_transaction_session_timeout "
                f"({IDLE_IN_TRANSACTION_S} s) + margin_s ({self.margin_s} s): a paused "
                f"owner's row locks would outlast it; got {self.lease_s!r}"
            )
        if not 0 < self.tick_s <= (self.lease_s - self.margin_s) / 2:
            raise ValueError(
                f"tick_s must be > 0 and at most (lease_s - margin_s) / 2 = "
                f"{(self.lease_s - self.margin_s) / 2} s, got {self.tick_s!r}"
            )


@attrs.frozen
class Claims:
    """What a node holds after a tick: ``{shard: epoch}`` and the live node count."""

    held: Mapping[int, int]
    live: int


@attrs.define
class Ownership:
    """A node's view of what it holds and until when it may serve it.

    The driver feeds it the coordinator's answers and trio's clock; it answers what to
    claim or let go and whether a shard is served now.
    """

    config: ClusterConfig
    #: shard -> epoch of this node's claim, as the coordinator last confirmed.
    held: dict[int, int] = attrs.field(factory=dict)
    #: Serve nothing from this time on (local clock) unless renewed before.
    deadline: float = -math.inf

    def serving(self, shard: int, now: float) -> int | None:
        """The epoch under which this node serves ``shard`` now, or None."""
        if now >= self.deadline:
            return None
        return self.held.get(shard)

    def moved(self, claims: Claims) -> set[int]:
        """The shards held now whose claim ``claims`` does not confirm (gone, or held again
        under a new epoch: someone else may have written them in between)."""
        return {s for s, e in self.held.items() if claims.held.get(s) != e}

    def renewed(self, sent_at: float, claims: Claims) -> tuple[set[int], set[int]]:
        """Record a successful renewal (or claim) sent at ``sent_at``.

        Returns:
          The shards gained and the shards lost since the last answer (a shard whose epoch
          changed counts as both: someone else held it in between).
        """
        before = self.held
        after = dict(claims.held)
        gained = {s for s, e in after.items() if before.get(s) != e}
        lost = {s for s, e in before.items() if after.get(s) != e}
        self.held = after
        self.deadline = sent_at + self.config.lease_s - self.config.margin_s
        return gained, lost

    def expire(self, now: float) -> set[int]:
        """Stop serving everything if the deadline passed; the shards given up."""
        if now < self.deadline or not self.held:
            return set()
        lost = set(self.held)
        self.held = {}
        return lost

    def wanted(self, live: int) -> int:
        """How many more shards to claim (0 when at or over the fair share)."""
        return max(fair_share(self.config.shards, live) - len(self.held), 0)

    def surplus(self, live: int, fewest: int | None = None) -> list[int]:
        """The shards to let go (module rules).

        Args:
          live: how many nodes are live.
          fewest: how many shards the live node holding fewest holds (as last read; None:
            not known).
        """
        held = sorted(self.held)
        share = fair_share(self.config.shards, live)
        if len(held) >= share + HYSTERESIS:
            return held[share:]
        floor = self.config.shards // max(live, 1)
        if fewest is not None and len(held) > floor and len(held) - fewest >= HYSTERESIS:
            return held[-1:]
        return []

    def drop(self, shards: Iterable[int]) -> None:
        """Forget shards let go (or lost)."""
        for shard in shards:
            self.held.pop(shard, None)
