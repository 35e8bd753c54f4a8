"""How a hub ends: an outside cancel still runs the orderly, durable shutdown."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from troupe import EV_TEXT, HubClient, LocalLink, Passport, SQLiteStore, open_hub


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
