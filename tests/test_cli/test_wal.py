"""``troupe wal inspect|tail|verify`` on a real SQLite store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from troupe import EV_TEXT, Envelope, Passport, SQLiteStore, open_hub
from troupe._wal_cli import main
from troupe.cli import main as cli_main


async def build_store(path: Path) -> str:
    """A store with one consulting exchange (closed) and one open conversation."""
    async with open_hub(SQLiteStore(path, synchronous="OFF", threaded=False)) as hub:
        ids = {}
        for name in ("asker", "expert"):
            ids[name] = (await hub.register(Passport(name=name))).agent_id or ""

        async def ack_all() -> None:
            # No clients here: ack the invites directly, as a client would.
            for md in await hub.list_sessions():
                for invitee in md.pending_acks:
                    await hub.post_envelope(
                        Envelope(
                            session_id=md.session_id,
                            sender_id=invitee,
                            event_type="troupe.session.invite.ack",
                        )
                    )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: hub.create_session(
                    creator_id=ids["asker"],
                    manifest_type="consulting",
                    participants=[ids["expert"]],
                )
            )
            await trio.testing.wait_all_tasks_blocked()
            await ack_all()
        (md,) = await hub.list_sessions()
        for sender, text in (("asker", "why?"), ("expert", "because.")):
            await hub.post_envelope(
                Envelope(
                    session_id=md.session_id,
                    sender_id=ids[sender],
                    event_type=EV_TEXT,
                    event_data={"text": text},
                )
            )
        return md.session_id


@pytest.fixture
async def store(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "hub.db"
    return path, await build_store(path)


def run_cli(
    capsys: pytest.CaptureFixture[str], db: str, action: str, session: str | None, count: int
) -> tuple[int, str]:
    """The exit code, and stdout (or stderr when the command failed with 2)."""
    code = main(db, action, session, count)
    out, err = capsys.readouterr()
    if code == 2:
        assert not out, "an error goes to stderr only"
        return code, err
    assert not err
    return code, out


async def test_inspect_lists_sessions_then_one_session(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, sid = store
    code, out = await trio.to_thread.run_sync(
        lambda: run_cli(capsys, str(path), "inspect", None, 20)
    )
    assert code == 0
    assert out.splitlines()[0] == "2 agents"
    assert f"{sid}  consulting    closed (consulting_complete)" in out
    code, out = await trio.to_thread.run_sync(
        lambda: run_cli(capsys, str(path), "inspect", sid, 20)
    )
    assert code == 0
    assert "members    asker, expert" in out
    assert "      2  troupe.text" in out


async def test_tail_shows_the_last_envelopes_in_order(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, sid = store
    code, out = await trio.to_thread.run_sync(lambda: run_cli(capsys, str(path), "tail", sid, 2))
    lines = out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert "expert" in lines[0]
    assert "because." in lines[0]
    assert "troupe.session.closed" in lines[1]


async def test_verify_passes_a_sound_store_and_names_a_bad_snapshot(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, sid = store
    code, out = await trio.to_thread.run_sync(
        lambda: run_cli(capsys, str(path), "verify", None, 20)
    )
    assert (code, out.split(":")[0]) == (0, "ok")
    async with SQLiteStore(path, threaded=False) as raw:
        await raw.save_snapshot(sid, 4, {"not": "the folded state"})
    code, out = await trio.to_thread.run_sync(lambda: run_cli(capsys, str(path), "verify", sid, 20))
    assert code == 1
    assert f"{sid}: the snapshot at seq 4 differs from a refold" in out


async def test_unknown_session_and_missing_store_exit_2(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, _ = store
    code, out = await trio.to_thread.run_sync(lambda: run_cli(capsys, str(path), "tail", "nope", 5))
    assert (code, out) == (2, "troupe wal: no session 'nope' in this store\n")
    missing = tmp_path / "missing.db"
    code, out = await trio.to_thread.run_sync(
        lambda: run_cli(capsys, str(missing), "verify", None, 5)
    )
    assert code == 2
    assert str(missing) in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello, not a database", "not a troupe store (not an SQLite database)"),
        (None, "an SQLite database without the troupe marker; tables: x"),
    ],
)
async def test_a_file_that_is_not_a_troupe_store_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    expected: str,
) -> None:
    path = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(path) as db:
            db.execute("create table x (a)")
        db.close()
    else:
        path.write_bytes(content)
    code, err = await trio.to_thread.run_sync(
        lambda: run_cli(capsys, str(path), "inspect", None, 5)
    )
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("troupe wal: ")
    assert expected in err


def test_tail_requires_a_session_and_says_so_in_its_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["wal", "tail", "--db", "hub.db"])
    assert exited.value.code == 2
    assert "the following arguments are required: session" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["wal", "tail", "--help"])
    help_text = capsys.readouterr().out
    assert "a session id" in help_text
    assert "all sessions when omitted" not in help_text
