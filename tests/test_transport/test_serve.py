"""``troupe serve`` as a real process: the CLI, clean stops, and restarts under live clients."""

from __future__ import annotations

import itertools
import json
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from troupe import EV_TEXT, AuthError, ConnectionLost, Envelope, HubClient, Passport, open_hub
from troupe.transport import WsLink

from ._wire import QUIET, Echo

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"listening on ws://127\.0\.0\.1:(\d+)")


def _troupe(*args: str) -> list[str]:
    return [sys.executable, "-m", "troupe", *args]


def free_port() -> int:
    """A port nothing listens on now (for a server that must come back on the same one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define
class Server:
    process: trio.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def stop(self, signum: signal.Signals) -> int:
        self.process.send_signal(signum)
        return await self.process.wait()


@asynccontextmanager
async def troupe_serve(
    db: Path, log: Path, *args: str, port: int = 0, open_files: int | None = None
) -> AsyncIterator[Server]:
    """Run ``troupe serve`` until the block ends (SIGKILL if it is still running then).

    ``open_files``: its limit of open file descriptors (``ulimit -n``).
    """

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with log.open("ab") as err:
        process = await trio.lowlevel.open_process(
            _troupe("serve", "--db", str(db), "--port", str(port), *args),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            preexec_fn=limit_files,
        )
    try:
        assert process.stdout is not None
        printed = b""
        while (found := LISTENING.search(printed)) is None:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise AssertionError(f"troupe serve exited: {await trio.Path(log).read_text()}")
            printed += chunk
        yield Server(process, int(found.group(1)), log)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "No such file"),
        ("{not json", "cannot read API keys"),
        ('["echo", "k"]', "JSON object of agent name -> token strings"),
        ('{"echo": 5}', "JSON object of agent name -> token strings"),
    ],
    ids=["missing", "not-json", "not-an-object", "not-strings"],
)
def test_a_bad_api_keys_file_exits_2_naming_the_file(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    keys = tmp_path / "keys.json"
    if content is not None:
        keys.write_text(content)
    done = subprocess.run(
        _troupe("serve", "--db", str(tmp_path / "hub.db"), "--api-keys", str(keys)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert str(keys) in done.stderr
    assert complaint in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "hub.db").exists()


def test_a_port_in_use_or_a_file_that_is_not_a_store_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    not_a_store = tmp_path / "notes.db"
    not_a_store.write_text("not a database " * 100)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for db, complaint in [
            (tmp_path / "hub.db", f"cannot serve on 127.0.0.1:{port}: [Errno"),
            (not_a_store, f"'{not_a_store}' is not a troupe store"),
        ]:
            done = subprocess.run(
                _troupe("serve", "--db", str(db), "--port", str(port)),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert done.returncode == 1
            assert complaint in done.stderr
            assert "Traceback" not in done.stderr


@pytest.mark.slow
async def test_sigint_stops_it_cleanly_and_the_file_reopens(tmp_path: Path) -> None:
    db, keys = tmp_path / "hub.db", tmp_path / "keys.json"
    keys.write_text(json.dumps({"echo": "k-echo", "me": "k-me"}))
    with trio.fail_after(20):
        async with troupe_serve(db, tmp_path / "serve.log", "--api-keys", str(keys)) as server:
            link = WsLink(server.url, auth={"echo": "k-echo", "me": "k-me"}, ping_interval=QUIET)
            async with HubClient(link) as hc:
                await hc.register(Echo(), Passport(name="echo"))
                me = await hc.register_human(Passport(name="me"))
                ch = await me.open(type="consulting", target="echo")
                await me.send(ch.session_id, "hi")
                await me.wait_for_channel_event(
                    channel_id=ch.session_id,
                    predicate=lambda e: e.event_type == EV_TEXT and e.sender_id != me.agent_id,
                    timeout=5,
                )
                # The keys file is enforced.
                async with HubClient(WsLink(server.url, ping_interval=QUIET)) as stranger:
                    with pytest.raises(AuthError):
                        await stranger.register(Echo(), Passport(name="nobody"))
                assert await server.stop(signal.SIGINT) == 0
    log = await trio.Path(server.log).read_text()
    assert "got SIGINT: stopping" in log
    assert "closed cleanly" in log
    assert "Traceback" not in log
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    async with open_hub(db) as hub:
        assert hub.find_agent_id("echo") is not None
        wal = await hub.read_wal(ch.session_id)
        assert [e.text for e in wal if e.event_type == EV_TEXT] == ["hi", "echo: hi"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_clients_carry_on_across_a_server_restart(
    tmp_path: Path, signum: signal.Signals
) -> None:
    db, log = tmp_path / "hub.db", tmp_path / "serve.log"
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    echo = Echo()

    def link() -> WsLink:
        return WsLink(url, ping_interval=QUIET, connect_timeout=1.0)

    def reply_to(text: str) -> Callable[[Envelope], bool]:
        return lambda e: e.event_type == EV_TEXT and e.text == f"echo: {text}"

    with trio.fail_after(30):
        async with (
            troupe_serve(db, log, port=port) as first,
            HubClient(link(), reconnect_within=20, reconnect_seed=1) as agents,
            HubClient(link(), reconnect_within=20, reconnect_seed=2) as people,
        ):
            await agents.register(echo, Passport(name="echo"))
            me = await people.register_human(Passport(name="me"))
            ch = await me.open(type="conversation", target="echo")
            await me.send(ch.session_id, "one")
            await me.wait_for_channel_event(
                channel_id=ch.session_id, predicate=reply_to("one"), timeout=5
            )
            before = await people.read_wal(ch.session_id)
            assert await first.stop(signum) == (-signum if signum is signal.SIGKILL else 0)

            # While the hub is down a post waits for the reconnect, then lands once.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(me.send, ch.session_id, "two")
                async with troupe_serve(db, log, port=port) as second:
                    assert second.port == port
                    got = await me.wait_for_channel_event(
                        channel_id=ch.session_id, predicate=reply_to("two"), timeout=10
                    )
                    after = await people.read_wal(ch.session_id)
                    assert await second.stop(signal.SIGINT) == 0

    # The session went on where it stopped: the same envelopes, then the new ones.
    assert after[: len(before)] == before
    assert [e.seq for e in after] == list(range(1, len(after) + 1))
    assert [e.text for e in after if e.event_type == EV_TEXT] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
    ]
    assert got.seq == after[-1].seq
    assert echo.heard == ["one", "two"]  # nothing handled twice after the replay
    assert "Traceback" not in await trio.Path(log).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_in_the_middle_of_posts_loses_no_accepted_envelope(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # Four posters keep posting while the server is told to stop: every post the hub
    # accepted (its id came back) is in the WAL after the stop, contiguous, exactly once.
    db, log = tmp_path / "hub.db", tmp_path / "serve.log"
    accepted: list[str] = []
    refused: list[BaseException] = []
    with trio.fail_after(30):
        async with troupe_serve(db, log) as server:
            link = WsLink(server.url, ping_interval=QUIET, connect_timeout=0.5)
            async with HubClient(link, reconnect_within=0.5, reconnect_seed=0) as hc:
                ann = await hc.register_human(Passport(name="ann"))
                await hc.register_human(Passport(name="bob"))
                ch = await ann.open(type="conversation", target="bob", knobs={"max_turns": None})

                enough = trio.Event()

                async def post_until_refused(poster: int) -> None:
                    for i in itertools.count():
                        try:
                            accepted.append(await ann.send(ch.session_id, f"{poster}-{i}"))
                            if len(accepted) >= 200:
                                enough.set()
                        except ConnectionLost as exc:
                            refused.append(exc)
                            return

                async with trio.open_nursery() as nursery:
                    for poster in range(4):
                        nursery.start_soon(post_until_refused, poster)
                    await enough.wait()
                    assert await server.stop(signum) == 0
    assert len(refused) == 4  # each poster ran until the hub was gone
    assert "Traceback" not in await trio.Path(log).read_text()
    async with open_hub(db) as hub:
        wal = await hub.read_wal(ch.session_id)
    texts = [e for e in wal if e.event_type == EV_TEXT]
    assert [e.seq for e in wal] == list(range(1, len(wal) + 1))
    assert len({e.envelope_id for e in texts}) == len(texts)
    assert set(accepted) <= {e.envelope_id for e in texts}
