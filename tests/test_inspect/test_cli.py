"""``troupe serve --inspect-port`` and ``troupe inspect`` as real processes on real sockets."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from troupe import Passport, open_hub

REPO = Path(__file__).resolve().parents[2]
SERVING = re.compile(rb"(?:inspector on|read-only\) on) http://127\.0\.0\.1:(\d+)")
#: Real seconds a process gets to start or stop.
DEADLINE_S = 30


def _troupe(*args: str) -> list[str]:
    return [sys.executable, "-m", "troupe", *args]


@asynccontextmanager
async def running(log: Path, *args: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """Run ``troupe ARGS`` until the block ends; the process and the inspector's URL."""
    with log.open("ab") as err:
        process = await trio.lowlevel.open_process(
            _troupe(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert process.stdout is not None
        printed = b""
        with trio.fail_after(DEADLINE_S):
            while (found := SERVING.search(printed)) is None:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"troupe exited: {await trio.Path(log).read_text()}")
                printed += chunk
        yield process, f"http://127.0.0.1:{int(found.group(1))}"
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def stop(process: trio.Process) -> int:
    process.send_signal(signal.SIGINT)
    with trio.fail_after(DEADLINE_S):
        return await process.wait()


async def test_troupe_inspect_serves_a_store_at_rest(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    async with open_hub(db) as hub:
        await hub.register(Passport(name="alice"))
    async with running(tmp_path / "log", "inspect", "--db", str(db), "--port", "0") as (
        process,
        url,
    ):
        async with httpx.AsyncClient(base_url=url) as http:
            agents = (await http.get("/api/agents")).json()["agents"]
            assert [a["name"] for a in agents] == ["alice"]
            page = await http.get("/agents")
            assert 'data-live="0"' in page.text
        assert await stop(process) == 0


async def test_troupe_serve_runs_the_inspector_beside_the_hub_behind_a_key(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"alice": "alice-token"}))
    operator = tmp_path / "operator.key"
    operator.write_text("operator-token\n")
    args = ["serve", "--db", str(tmp_path / "hub.db"), "--port", "0", "--inspect-port", "0"]
    args += ["--api-keys", str(keys), "--inspect-key-file", str(operator)]
    async with running(tmp_path / "log", *args) as (process, url):
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/api/statistics")).status_code == 401
            agent_key = {"Authorization": "Bearer alice-token"}
            assert (await http.get("/api/statistics", headers=agent_key)).status_code == 401
            bearer = {"Authorization": "Bearer operator-token"}
            stats = (await http.get("/api/statistics", headers=bearer)).json()
            assert stats["live"] is True
            assert stats["now"]["agents"] == 0
            tree = (await http.get("/api/supervision", headers=bearer)).json()
            assert tree["root"]["state"] == "running"
        assert await stop(process) == 0


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["serve", "--inspect-port", "0", "--api-keys", "{keys}"], "needs --inspect-key-file"),
        (["serve", "--inspect-key-file", "{key}"], "give --inspect-port too"),
        (["serve", "--inspect-port", "0", "--inspect-key-file", "{empty}"], "holds no operator"),
        (["serve", "--inspect-port", "0", "--inspect-key-file", "{missing}"], "cannot read"),
        (["serve", "--inspect-port", "70000"], "must be a port number"),
        (["inspect", "--db", "{missing}"], "no store at"),
        (["inspect", "--db", "{db}", "--host", "0.0.0.0"], "without --key-file"),
        (["inspect", "--db", "{db}", "--key-file", "{empty}"], "holds no operator"),
    ],
    ids=[
        "keys-without-operator-key",
        "key-without-port",
        "empty-key",
        "missing-key",
        "bad-port",
        "no-store",
        "exposed-without-key",
        "inspect-empty-key",
    ],
)
def test_bad_options_exit_2_saying_what_is_wrong(
    tmp_path: Path, args: list[str], complaint: str
) -> None:
    files = {
        "keys": tmp_path / "keys.json",
        "key": tmp_path / "operator.key",
        "empty": tmp_path / "empty.key",
        "missing": tmp_path / "missing",
        "db": tmp_path / "there.db",
    }
    files["keys"].write_text('{"alice": "t"}')
    files["key"].write_text("k")
    files["empty"].write_text("\n")
    files["db"].write_text("")
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    if argv[0] == "serve":
        argv += ["--db", str(tmp_path / "hub.db"), "--port", "0"]
    done = subprocess.run(
        _troupe(*argv), cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert done.returncode == 2, done.stderr
    assert complaint in done.stderr
    assert not (tmp_path / "hub.db").exists()


def test_an_inspector_port_in_use_exits_1_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "hub.db"
        args = ["serve", "--db", str(db), "--port", "0", "--inspect-port", str(port)]
        done = subprocess.run(
            _troupe(*args), cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S
        )
    assert done.returncode == 1, done.stderr
    assert f"the inspector cannot serve on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists()  # as when the hub's own port is taken
