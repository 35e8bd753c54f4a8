"""How a hub ends: an outside cancel still runs the orderly, durable shutdown."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from troupe import (
    EV_TEXT,
    Envelope,
    HubClient,
    LocalLink,
    MemoryStore,
    Passport,
    ProtocolError,
    SQLiteStore,
    open_hub,
)
from troupe.testing import FaultyStore


async def run_until_cancelled(path: Path, *, cancel: bool) -> tuple[str, str]:
    """A delivery acked (its cursor not yet saved) and registrations audited; then the hub
    is left normally or cancelled from outside. Returns (bob's id, the session id)."""
    with trio.CancelScope() as outside:
        store = SQLiteStore(path, threaded=False)
        async with open_hub(store, cursor_flush_interval=60.0, passivate_after=None) as hub:
            hc = HubClient(LocalLink(hub))
            al = await hc.register_human(Passport(name="al"))
            bo = await hc.register_human(Passport(name="bo"))
            chat = await al.open(type="conversation", target="bo")
            await al.send(chat.session_id, "hi")
            await bo.wait_for_channel_event(
                channel_id=chat.session_id, predicate=lambda e: e.event_type == EV_TEXT
            )
            await trio.testing.wait_all_tasks_blocked()  # bo's receipt reached the hub
            if cancel:
                outside.cancel()  # a move_on_after, a cancelled parent, Ctrl-C around it
                await trio.sleep_forever()
    return bo.agent_id, chat.session_id


async def test_an_outside_cancel_still_saves_cursors_and_the_audit_log(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    for cancel in (False, True):
        path = tmp_path / f"hub-{cancel}.db"
        bo, sid = await run_until_cancelled(path, cancel=cancel)
        async with SQLiteStore(path, threaded=False) as store:
            assert (await store.load_cursors(bo))[sid] == 4  # invite, ack, opened, hi
            kinds = [r["kind"] for r in await store.read_audit()]
            assert kinds.count("agent_registered") == 2
            assert "session_opened" in kinds


async def test_posts_caught_by_the_hubs_end_are_refused_as_such(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One post is being appended (slowly) when the hub's block ends, two wait behind it in
    # the session's mailbox, one comes after. The first lands; the others are refused with
    # "the hub is shutting down", not as a crashed session, and none of them is appended.
    store = FaultyStore(MemoryStore())
    outcomes: dict[str, str] = {}
    async with trio.open_nursery() as posters:
        async with open_hub(store, passivate_after=None) as hub:
            hc = HubClient(LocalLink(hub))
            al = await hc.register_human(Passport(name="al"))
            await hc.register_human(Passport(name="bo"))
            chat = await al.open(type="conversation", target="bo")
            sid = chat.session_id

            async def post(text: str) -> None:
                env = Envelope(
                    session_id=sid,
                    sender_id=al.agent_id,
                    event_type=EV_TEXT,
                    event_data={"text": text},
                )
                try:
                    await hub.post(env)
                except ProtocolError as exc:
                    outcomes[text] = str(exc)
                else:
                    outcomes[text] = "accepted"

            store.delay("append", 2.0, n=1, session_id=sid)
            for text in ("first", "second", "third"):
                posters.start_soon(post, text)
                await trio.testing.wait_all_tasks_blocked()
        await post("late")
    assert outcomes["first"] == "accepted"
    for text in ("second", "third"):
        assert outcomes[text].startswith("the hub is shutting down: envelope "), outcomes[text]
        assert outcomes[text].endswith(" was not accepted")
    assert outcomes["late"] == "the hub is shutting down: no new posts are accepted"
    async with open_hub(store) as again:
        texts = [e.text for e in await again.read_wal(sid) if e.event_type == EV_TEXT]
    assert texts == ["first"]
