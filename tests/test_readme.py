"""The README's snippets that keep state run twice in a row on the same store, as written.

A newcomer runs the Quickstart, fixes something, runs it again; a run may also fail half way
and leave its identities registered. Each snippet is taken from the README itself (not a
copy), so the README cannot drift from what is tested.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from troupe import ApiKeyAuth, HubClient, Passport, SQLiteStore, Turn

from .test_transport._wire import serving

README = (Path(__file__).parents[1] / "README.md").read_text()


def first_python_block(after: str) -> str:
    """The first ```python block of the README after the line ``after``."""
    section = README.split(after, 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, f"no python block after {after!r} in the README"
    return block.group(1)


def run_program(code: str) -> None:
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})


def test_the_quickstart_runs_twice_and_again_after_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the Quickstart writes hub.db where it runs
    quickstart = first_python_block("## Quickstart")
    assert 'open_hub("hub.db")' in quickstart
    run_program(quickstart)
    run_program(quickstart)
    # A run that fails before shutdown() leaves 'echo' and 'me' registered in hub.db.
    failing = quickstart.replace("await hc.shutdown()", "raise LookupError('a bug')")
    assert failing != quickstart
    with pytest.RaisesGroup(LookupError, flatten_subgroups=True, allow_unwrapped=True):
        run_program(failing)
    run_program(quickstart)
    run_program(quickstart)
    assert capsys.readouterr().out == "echo: hello\n" * 5


class Bob:
    async def respond(self, turn: Turn) -> str:
        await trio.lowlevel.checkpoint()
        return "Hi Ann"


async def test_the_connect_snippet_runs_twice_on_the_same_store(tmp_path: Path) -> None:
    snippet = first_python_block("**Connect.**")
    imports = "".join(line + "\n" for line in snippet.splitlines() if line.startswith("from "))
    body = "".join(line + "\n" for line in snippet.splitlines() if not line.startswith("from "))
    keys = {"ann": "k-ann", "bob": "k-bob"}
    for _ in range(2):  # two hub runs on one file: the second finds ann and bob registered
        with trio.fail_after(20):
            async with serving(
                store=SQLiteStore(tmp_path / "hub.db"), auth=[ApiKeyAuth(keys)]
            ) as s:
                async with HubClient(s.link(auth={"bob": "k-bob"})) as hc:
                    await hc.register(Bob(), Passport(name="bob"), exist_ok=True)
                    program = (
                        imports
                        + "async def snippet():\n"
                        + textwrap.indent(body.replace("ws://127.0.0.1:8765", s.url), "    ")
                    )
                    scope: dict[str, Any] = {}
                    exec(compile(program, "README.md", "exec"), scope)
                    await scope["snippet"]()
                    await scope["snippet"]()  # ann stayed registered: attached again
                    chats = await s.hub.list_sessions(agent_id=s.hub.find_agent_id("ann") or "")
                    assert len(chats) >= 2


async def test_the_cluster_snippet_serves_a_node(pg_dsn: str, pg_schemas: list[str]) -> None:
    from ._postgres import new_schema

    snippet = first_python_block("## Running a cluster")
    schema = new_schema(pg_schemas)
    # In its own schema (the snippet uses the default one), and doing something in the block.
    snippet = snippet.replace("PostgresCoordinator(dsn)", "PostgresCoordinator(dsn, schema=schema)")
    snippet = snippet.replace("PostgresStore(dsn, ", "PostgresStore(dsn, schema=schema, ")
    assert snippet.count("schema=schema") == 2
    assert snippet.rstrip().endswith("...")
    snippet = snippet.rstrip()[:-3] + "done.append(await hub.register(Passport(name='ann')))\n"
    imports = "".join(line + "\n" for line in snippet.splitlines() if line.startswith("from "))
    body = "".join(line + "\n" for line in snippet.splitlines() if not line.startswith("from "))
    program = (
        "from troupe import Passport\n"
        + imports
        + "async def snippet(dsn, schema, done):\n"
        + textwrap.indent(body, "    ")
    )
    scope: dict[str, Any] = {}
    exec(compile(program, "README.md", "exec"), scope)
    done: list[Any] = []
    with trio.fail_after(30):
        await scope["snippet"](pg_dsn, schema, done)
    assert [p.name for p in done] == ["ann"]
