"""Sessions, the WAL, idempotency keys and snapshots, on every engine."""

from __future__ import annotations

import pytest
import trio

import troupe
from troupe.model import SessionState
from troupe.store import DuplicateKey, Snapshot, Store

from .conftest import Reopen
from .factories import env, envs, session


async def test_sessions_load_in_creation_order(store: Store) -> None:
    for sid in ("s2", "s1", "s3"):
        await store.save_session(session(sid))
    await store.save_session(session("s2", SessionState.CLOSED))
    loaded = await store.load_sessions()
    assert [m.session_id for m in loaded] == ["s2", "s1", "s3"]
    assert loaded[0] == session("s2", SessionState.CLOSED)
    assert await store.get_session("s1") == session("s1")
    assert await store.get_session("nope") is None


async def test_append_and_read_windows(store: Store) -> None:
    batch = envs("s1", 1, 5, audience=["bob"], task_id="t1")
    await store.append("s1", batch[:2])
    await store.append("s1", batch[2:])
    assert await store.read("s1") == batch
    assert await store.read("s1", since=2) == batch[2:]
    assert await store.read("s1", since=1, until=3) == batch[1:3]
    assert await store.read("s1", until=0) == []
    assert await store.read("s1", since=4, until=2) == []
    assert await store.read("s1", since=-3, until=1) == batch[:1]
    assert await store.read("s1", since=9) == []
    assert await store.read("unknown") == []
    assert await store.last_seq("s1") == 5
    assert await store.last_seq("unknown") == 0


async def test_sessions_have_separate_wals(store: Store) -> None:
    await store.append("s1", envs("s1", 1, 2))
    await store.append("s2", envs("s2", 1, 3))
    assert [e.seq for e in await store.read("s1")] == [1, 2]
    assert [e.session_id for e in await store.read("s2")] == ["s2"] * 3


@pytest.mark.parametrize(
    ("first", "words"),
    [(3, "has seq 3, expected 2"), (1, "has seq 1, expected 2"), (0, "has seq 0, expected 2")],
)
async def test_seq_must_continue_the_wal(store: Store, first: int, words: str) -> None:
    await store.append("s1", [env("s1", 1)])
    with pytest.raises(troupe.StoreError, match=words) as info:
        await store.append("s1", envs("s1", first, first + 1))
    assert "'s1'" in str(info.value)
    assert [e.seq for e in await store.read("s1")] == [1]


async def test_append_is_all_or_nothing(store: Store) -> None:
    await store.append("s1", [env("s1", 1)])
    closed = session("s1", SessionState.CLOSED)
    # The third envelope leaves a gap: neither the first two nor the metadata land.
    with pytest.raises(troupe.StoreError, match="expected 4"):
        await store.append("s1", [env("s1", 2), env("s1", 3), env("s1", 5)], metadata=closed)
    assert await store.last_seq("s1") == 1
    assert await store.get_session("s1") is None


async def test_envelopes_of_another_session_are_refused(store: Store) -> None:
    with pytest.raises(troupe.StoreError, match="belongs to session 's2', not 's1'"):
        await store.append("s1", [env("s1", 1), env("s2", 2)])
    assert await store.read("s1") == []


async def test_metadata_lands_with_the_envelopes(store: Store) -> None:
    await store.save_session(session("s1"))
    closed = session("s1", SessionState.CLOSED)
    await store.append("s1", [env("s1", 1, event_type="troupe.session.closed")], metadata=closed)
    assert await store.get_session("s1") == closed
    assert await store.last_seq("s1") == 1
    # Metadata alone, with no envelope, is a valid append too.
    await store.append("s1", [], metadata=session("s1", SessionState.EXPIRED))
    assert (await store.load_sessions())[0].state is SessionState.EXPIRED


async def test_metadata_of_another_session_is_refused(store: Store) -> None:
    with pytest.raises(troupe.StoreError, match="metadata of session 's2'"):
        await store.append("s1", [env("s1", 1)], metadata=session("s2"))
    assert await store.read("s1") == []
    assert await store.get_session("s2") is None


async def test_idempotency_keys(store: Store) -> None:
    await store.append("s1", [env("s1", 1, idempotency_key="k1"), env("s1", 2)])
    assert await store.find_idempotent("s1", "k1") == env("s1", 1, idempotency_key="k1")
    assert await store.find_idempotent("s1", "k2") is None
    assert await store.find_idempotent("s2", "k1") is None
    # Keys are per session: another session may use the same key.
    await store.append("s2", [env("s2", 1, idempotency_key="k1")])
    assert (await store.find_idempotent("s2", "k1")) == env("s2", 1, idempotency_key="k1")


async def test_a_key_is_accepted_once(store: Store) -> None:
    await store.append("s1", [env("s1", 1, idempotency_key="k1")])
    with pytest.raises(troupe.StoreError, match="'s1' already accepted idempotency key 'k1'"):
        await store.append("s1", [env("s1", 2), env("s1", 3, idempotency_key="k1")])
    assert await store.last_seq("s1") == 1
    with pytest.raises(troupe.StoreError, match="idempotency key 'k2'"):
        await store.append(
            "s1", [env("s1", 2, idempotency_key="k2"), env("s1", 3, idempotency_key="k2")]
        )
    assert await store.last_seq("s1") == 1
    assert await store.find_idempotent("s1", "k2") is None


async def test_dedup_lookups_by_key_by_answer_and_the_latest(store: Store) -> None:
    await store.append(
        "s1",
        [
            env("s1", 1, idempotency_key="k1"),
            env("s1", 2, sender_id="bob", causation_id="s1-1"),
            env("s1", 3, idempotency_key="k3", sender_id="bob", causation_id="s1-1"),
            env("s1", 4, sender_id="bobby", causation_id="s1-1"),
        ],
    )
    await store.append("s2", [env("s2", 1, idempotency_key="k1")])
    assert await store.find_dedup("s1", ["k:k1"]) == ("s1-1", 1)
    assert await store.find_dedup("s1", ["k:nope", "k:k3"]) == ("s1-3", 3)
    assert await store.find_dedup("s1", ["k:nope"]) is None
    assert await store.find_dedup("s1", []) is None
    assert await store.find_dedup("s3", ["k:k1"]) is None
    # The first answer is the one named, whatever its event type; another sender is not.
    assert await store.find_answer("s1", "bob", "s1-1") == ("s1-2", 2)
    assert await store.find_answer("s1", "bobby", "s1-1") == ("s1-4", 4)
    assert await store.find_answer("s1", "bob", "s1-2") is None
    assert await store.find_answer("s1", "bo", "s1-1") is None
    # The latest answer keys only: an idempotency key is the WAL's own (find_dedup finds
    # it, an append repeating it fails), kept once. Seq 3 repeats seq 2's answer key: the
    # first envelope under a key keeps it.
    assert await store.recent_dedup("s1", 2) == [
        ("c:bob|s1-1|troupe.text", "s1-2", 2),
        ("c:bobby|s1-1|troupe.text", "s1-4", 4),
    ]
    assert [seq for _, _, seq in await store.recent_dedup("s1", 100)] == [2, 4]
    assert await store.recent_dedup("s1", 0) == []
    assert await store.recent_dedup("s3", 5) == []
    assert await store.load_dedup("s1") == {
        "k:k1": ("s1-1", 1),
        "k:k3": ("s1-3", 3),
        "c:bob|s1-1|troupe.text": ("s1-2", 2),
        "c:bobby|s1-1|troupe.text": ("s1-4", 4),
    }
    assert await store.find_dedup("s1", ["k:nope", "c:bob|s1-1|troupe.text", "k:k3"]) == (
        "s1-2",
        2,
    )


async def test_idempotency_keys_after_a_seq_and_whether_older_ones_exist(store: Store) -> None:
    await store.append(
        "s1",
        [
            env("s1", 1, idempotency_key="k1"),
            env("s1", 2),
            env("s1", 3, idempotency_key="k3", sender_id="bob", causation_id="s1-1"),
            env("s1", 4),
        ],
    )
    assert await store.idempotency_keys("s1", 0) == (
        [("k:k1", "s1-1", 1), ("k:k3", "s1-3", 3)],
        False,
    )
    assert await store.idempotency_keys("s1", 1) == ([("k:k3", "s1-3", 3)], True)
    assert await store.idempotency_keys("s1", 2) == ([("k:k3", "s1-3", 3)], True)
    assert await store.idempotency_keys("s1", 3) == ([], True)
    assert await store.idempotency_keys("s1", 9) == ([], True)
    await store.append("s2", [env("s2", 1), env("s2", 2)])
    assert await store.idempotency_keys("s2", 0) == ([], False)
    assert await store.idempotency_keys("s2", 1) == ([], False)
    assert await store.idempotency_keys("s3", 0) == ([], False)


async def test_a_repeated_key_is_refused_naming_the_key(store: Store) -> None:
    await store.append("s1", [env("s1", 1, idempotency_key="k1")])
    with pytest.raises(DuplicateKey) as refused:
        await store.append("s1", [env("s1", 2, idempotency_key="k1")])
    assert (refused.value.session_id, refused.value.key) == ("s1", "k1")


async def test_only_the_latest_snapshot_is_kept(store: Store) -> None:
    assert await store.load_snapshot("s1") is None
    await store.save_snapshot("s1", 10, {"turn": "bob", "count": 10})
    state = {"turn": "alice", "history": [1, 2]}
    await store.save_snapshot("s1", 20, state)
    state["turn"] = "changed after saving"
    assert await store.load_snapshot("s1") == Snapshot(
        seq=20, state={"turn": "alice", "history": [1, 2]}
    )
    assert await store.load_snapshot("s2") is None


async def test_a_snapshot_must_be_json(store: Store) -> None:
    with pytest.raises(troupe.StoreError, match="snapshot of 's1' is not JSON data"):
        await store.save_snapshot("s1", 1, {"x": object()})
    assert await store.load_snapshot("s1") is None


async def test_wal_survives_a_restart(reopen: Reopen) -> None:
    async with reopen() as store:
        await store.append("s1", envs("s1", 1, 3, idempotency_key=None), metadata=session("s1"))
        await store.append("s1", [env("s1", 4, idempotency_key="k")])
        await store.save_snapshot("s1", 3, {"n": 3})
    async with reopen() as store:
        assert [e.seq for e in await store.read("s1")] == [1, 2, 3, 4]
        assert await store.find_idempotent("s1", "k") == env("s1", 4, idempotency_key="k")
        assert await store.load_snapshot("s1") == Snapshot(seq=3, state={"n": 3})
        assert await store.get_session("s1") == session("s1")
        await store.append("s1", [env("s1", 5)])
        assert await store.last_seq("s1") == 5


async def test_concurrent_appends_to_many_sessions_all_land(store: Store) -> None:
    async def appender(sid: str) -> None:
        for seq in range(1, 6):
            await store.append(sid, [env(sid, seq)])

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(appender, f"s{n}")
    for n in range(20):
        assert [e.seq for e in await store.read(f"s{n}")] == [1, 2, 3, 4, 5]


async def test_a_bad_append_fails_only_its_caller(store: Store) -> None:
    await store.append("s1", [env("s1", 1)])
    failures: list[str] = []

    async def append(sid: str, seq: int) -> None:
        try:
            await store.append(sid, [env(sid, seq)])
        except troupe.StoreError as exc:
            failures.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(append, "s2", 1)
        nursery.start_soon(append, "s1", 5)  # a gap
        nursery.start_soon(append, "s3", 1)
    assert len(failures) == 1
    assert "expected 2" in failures[0]
    assert await store.last_seq("s1") == 1
    assert await store.last_seq("s2") == await store.last_seq("s3") == 1


async def test_a_cancelled_append_writes_nothing(store: Store) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.append("s1", [env("s1", 1)])
    assert scope.cancelled_caught
    assert await store.read("s1") == []
    await store.append("s1", [env("s1", 1)])
    assert await store.last_seq("s1") == 1
