"""The sans-IO core of ownership: shard_of, fair share, the config's bounds, Ownership."""

from __future__ import annotations

import math

import pytest

from troupe.cluster import Claims, ClusterConfig, Ownership, fair_share, shard_of


def test_a_sessions_shard_is_stable_across_processes() -> None:
    # crc32, not hash(): the same in every process and on every machine. crc32(b"a") is
    # 0xE8B7BE43, whose low five bits are 3.
    assert shard_of("a", 32) == 0xE8B7BE43 % 32 == 3
    assert [shard_of(s, 32) for s in ("session-1", "0" * 32)] == [14, 16]
    assert all(0 <= shard_of(f"s{i}", 7) < 7 for i in range(100))


def test_fair_share_is_the_ceiling() -> None:
    assert [fair_share(8, n) for n in (0, 1, 2, 3, 8, 9)] == [8, 8, 4, 3, 1, 1]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"node_id": ""}, "node_id"),
        ({"node_id": "a b"}, "node_id"),
        ({"node_id": "x" * 64}, "node_id"),
        ({"shards": 0}, "shards"),
        ({"shards": True}, "shards"),
        ({"shards": 4097}, "shards"),
        ({"margin_s": 0}, "margin_s"),
        ({"lease_s": 7.0}, "idle_in_transaction_session_timeout"),
        ({"tick_s": 0}, "tick_s"),
        ({"tick_s": 5.0}, "tick_s"),
    ],
)
def test_a_config_out_of_bounds_is_refused_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        ClusterConfig(**{"node_id": "n1", **fields})  # type: ignore[arg-type]


def test_the_default_config_is_valid() -> None:
    config = ClusterConfig(node_id="n1")
    assert (config.shards, config.lease_s, config.tick_s, config.margin_s) == (32, 10.0, 2.0, 2.0)


def test_a_node_serves_until_lease_minus_margin_after_it_sent_the_renewal() -> None:
    own = Ownership(ClusterConfig(node_id="n1", shards=8))
    assert own.serving(0, 0.0) is None
    gained, lost = own.renewed(100.0, Claims({0: 3, 1: 1}, live=1))
    assert (gained, lost) == ({0, 1}, set())
    assert own.deadline == 100.0 + 10.0 - 2.0
    assert own.serving(0, 107.9) == 3
    assert own.serving(0, 108.0) is None
    assert own.serving(2, 101.0) is None
    assert own.expire(107.0) == set()
    assert own.expire(108.0) == {0, 1}
    assert own.held == {}


def test_a_moved_epoch_counts_as_lost_and_gained() -> None:
    own = Ownership(ClusterConfig(node_id="n1", shards=8))
    own.renewed(0.0, Claims({0: 1, 1: 1}, live=1))
    later = Claims({0: 2, 2: 1}, live=1)
    assert own.moved(later) == {0, 1}
    assert own.renewed(1.0, later) == ({0, 2}, {0, 1})


def test_wanted_and_surplus_keep_a_fair_share_with_hysteresis() -> None:
    own = Ownership(ClusterConfig(node_id="n1", shards=8))
    assert own.wanted(2) == 4
    own.renewed(0.0, Claims(dict.fromkeys(range(5), 1), live=2))
    assert own.wanted(2) == 0
    assert own.surplus(2) == []  # 5 < 4 + 2: no flapping for one shard
    own.renewed(0.0, Claims(dict.fromkeys(range(8), 1), live=2))
    assert own.surplus(2) == [4, 5, 6, 7]
    assert own.deadline != -math.inf


def test_a_node_lets_one_shard_go_per_tick_while_another_holds_two_fewer() -> None:
    # 8 shards on 3 nodes: share 3, floor 2. Holding 4 (share + 1) lets nothing go by the
    # first rule; a live node holding 2 fewer makes it let one go (the joiner's case).
    own = Ownership(ClusterConfig(node_id="n1", shards=8))
    own.renewed(0.0, Claims(dict.fromkeys(range(4), 1), live=3))
    assert own.surplus(3) == []
    assert own.surplus(3, fewest=3) == []  # one apart: nothing moves
    assert own.surplus(3, fewest=2) == [3]
    assert own.surplus(3, fewest=0) == [3]  # one per tick, however short the other is
    own.renewed(0.0, Claims(dict.fromkeys(range(2), 1), live=3))
    assert own.surplus(3, fewest=0) == []  # at the floor it keeps what it holds
