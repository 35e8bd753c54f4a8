"""Issue 13 item 8 over the wire: an identity has one live connection (``troupe serve``)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import pytest
import trio

from troupe import (
    EV_TEXT,
    AgentClient,
    ConnectionLost,
    HubClient,
    HumanClient,
    IdentityInUse,
    Passport,
)
from troupe.model import ErrorFrame, HelloFrame, RequestFrame, ResponseFrame, SendFrame
from troupe.transport import WsLink

from ._wire import QUIET, proxied, raw, serving, text, wait_until
from .test_serve import REPO, _troupe, troupe_serve


async def _hears(person: HumanClient | AgentClient, session_id: str, body: str) -> None:
    got = await person.wait_for_channel_event(
        channel_id=session_id,
        predicate=lambda e: e.event_type == EV_TEXT and e.text == body,
        timeout=5,
    )
    assert got.text == body


@pytest.mark.slow
async def test_an_anonymous_hello_cannot_take_a_live_identity(tmp_path: Path) -> None:
    # Without --api-keys, {"kind": "hello", "name": "bob"} used to take bob's deliveries
    # and let the caller post as bob, read his WAL and unregister him.
    log = tmp_path / "serve.log"
    with trio.fail_after(30):
        async with troupe_serve(tmp_path / "hub.db", log) as server:
            link = WsLink_(server.url)
            async with HubClient(link) as bobs, HubClient(WsLink_(server.url)) as anns:
                bob = await bobs.register_human(Passport(name="bob"))
                ann = await anns.register_human(Passport(name="ann"))
                ch = await ann.open(type="conversation", target="bob")
                async with raw(server.url) as ws:
                    await ws.send(HelloFrame(name="bob", request_id="h"))
                    refusal = await ws.receive_kind(ErrorFrame)
                    assert (refusal.code, refusal.request_id) == ("identity_in_use", "h")
                    assert f"'bob' ({bob.agent_id}) is bound to another live" in refusal.message
                    # Nothing of bob's is reachable from this connection.
                    post = text(ch.session_id, bob.agent_id, "I am bob")
                    await ws.send(SendFrame(envelope=post, request_id="p"))
                    assert (await ws.receive_kind(ErrorFrame)).code == "access_denied"
                    for op, params in [
                        ("read_wal", {"session_id": ch.session_id}),
                        ("unregister", {"agent_id": bob.agent_id}),
                    ]:
                        await ws.send(RequestFrame(request_id=op, op=op, params=params))
                        answer = await ws.receive_kind(ResponseFrame)
                        assert (answer.request_id, answer.error_code) == (op, "access_denied")
                # A HubClient is told so, clearly, and holds nothing of it.
                async with HubClient(WsLink_(server.url)) as intruder:
                    with pytest.raises(IdentityInUse, match="'bob'"):
                        await intruder.attach(None, "bob")
                    assert intruder.identities() == []
                # bob keeps his deliveries, and his posts are his alone.
                await ann.send(ch.session_id, "for bob")
                await _hears(bob, ch.session_id, "for bob")
                await bob.send(ch.session_id, "from bob")
                await _hears(ann, ch.session_id, "from bob")
                wal = await anns.read_wal(ch.session_id)
                assert [e.text for e in wal if e.event_type == EV_TEXT] == ["for bob", "from bob"]
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
async def test_with_keys_a_rebind_takes_over_and_the_old_connection_is_told(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"bob": "k-bob", "ann": "k-ann"}))
    with trio.fail_after(30):
        async with troupe_serve(
            tmp_path / "hub.db", tmp_path / "serve.log", "--api-keys", str(keys)
        ) as server:
            old = HubClient(WsLink_(server.url, {"bob": "k-bob"}))
            async with old, HubClient(WsLink_(server.url, {"ann": "k-ann"})) as anns:
                bob = await old.register_human(Passport(name="bob"))
                ann = await anns.register_human(Passport(name="ann"))
                ch = await ann.open(type="conversation", target="bob")
                # A wrong key takes nothing.
                async with raw(server.url) as ws:
                    await ws.send(
                        HelloFrame(name="bob", auth_scheme="api_key", auth_claim={"token": "guess"})
                    )
                    assert (await ws.receive_kind(ErrorFrame)).code == "auth_failed"
                async with HubClient(WsLink_(server.url, {"bob": "k-bob"})) as new:
                    again = await new.attach(None, "bob")
                    assert again.agent_id == bob.agent_id
                    # The old connection was told why and closed; its client stops there
                    # (reconnecting would take bob back, and so on).
                    with trio.fail_after(5):
                        await wait_until(lambda: old.endpoint_id is None)
                    with pytest.raises(ConnectionLost, match="taken over"):
                        await old.list_agents()
                    # The runner lets the identities go after the connection's teardown.
                    with trio.fail_after(5):
                        await wait_until(lambda: bob.disconnected)
                    await ann.send(ch.session_id, "to the new bob")
                    await _hears(again, ch.session_id, "to the new bob")
                    await again.send(ch.session_id, "new bob here")
                    await _hears(ann, ch.session_id, "new bob here")
                    assert new.endpoint_id is not None


def WsLink_(url: str, auth: dict[str, str] | None = None) -> WsLink:
    return WsLink(url, auth=auth, ping_interval=QUIET, connect_timeout=2)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_serving_beyond_loopback_without_keys_is_refused(tmp_path: Path, host: str) -> None:
    done = subprocess.run(
        _troupe("serve", "--db", str(tmp_path / "hub.db"), "--host", host, "--port", "0"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert f"refusing to serve on {host} without --api-keys" in done.stderr
    assert "--allow-anonymous" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "hub.db").exists()


async def test_allow_anonymous_serves_beyond_loopback(tmp_path: Path) -> None:
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            _troupe(
                "serve",
                "--db",
                str(tmp_path / "hub.db"),
                "--host",
                "0.0.0.0",
                "--port",
                "0",
                "--allow-anonymous",
            ),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert process.stdout is not None
            printed = b""
            while not re.search(rb"listening on ws://0\.0\.0\.0:\d+", printed):
                chunk = await process.stdout.receive_some()
                assert chunk, "troupe serve exited"
                printed += chunk
        finally:
            process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def test_a_reconnecting_client_waits_for_its_identity_to_be_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without keys a re-bind cannot take the identity from a live connection; the client
    # that reconnects while another still holds it (here a squatter; usually its own dead
    # connection, until the hub's heartbeat lets it go) retries the bind, and gets it back.
    caplog.set_level(logging.WARNING, logger="troupe.client")
    with trio.fail_after(20):
        async with (
            serving() as served,
            proxied(served) as proxy,
            HubClient(served.link()) as anns,
        ):
            ann = await anns.register_human(Passport(name="ann"))
            link = WsLink(proxy.url, ping_interval=QUIET, connect_timeout=1)
            async with HubClient(link, reconnect_within=15) as bobs:
                bob = await bobs.register_human(Passport(name="bob"))
                ch = await ann.open(type="conversation", target="bob")
                proxy.freeze()  # its next connection waits in the proxy
                proxy.cut()
                await wait_until(lambda: bob.agent_id not in served.hub.core.bindings)
                async with raw(served.url) as squatter:
                    await squatter.hello("bob")
                    proxy.thaw()
                    await wait_until(
                        lambda: any("still bound" in r.message for r in caplog.records)
                    )
                    assert served.hub.core.bindings[bob.agent_id] is not None
                # The squatter left: bob's client binds him again and carries on.
                await ann.send(ch.session_id, "are you back?")
                await _hears(bob, ch.session_id, "are you back?")
                await bob.send(ch.session_id, "yes")
                await _hears(ann, ch.session_id, "yes")
