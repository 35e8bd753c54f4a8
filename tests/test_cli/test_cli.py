"""The ``troupe`` command's own behaviour, in process: help, version, arguments, failures.

Every failure reaches the terminal as one line on stderr with the command's prefix and an
exit code, never a traceback.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from troupe import StoreError
from troupe.cli import build_parser, main


def fails_to_parse(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """argparse's refusal (exit 2): its stderr. (Parsing only: nothing runs.)"""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(args)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert not out
    return err


@pytest.mark.parametrize(
    "args",
    [["--help"], ["demo", "--help"], ["serve", "--help"], ["wal", "verify", "--help"]],
)
def test_every_command_documents_its_options(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 0
    assert "usage: troupe" in capsys.readouterr().out


def test_serve_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--db",
        "--host",
        "--port",
        "--api-keys",
        "--allow-anonymous",
        "--max-connections",
        "--max-connections-per-address",
        "--cluster-key-file",
    ):
        assert option in out
    assert "SIGINT" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"troupe {importlib.metadata.version('trio-troupe')}\n"


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_serve_refuses_a_port_out_of_range(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails_to_parse(["serve", "--port", port], capsys)
    assert (
        f"argument --port: must be a port number from 0 to 65535 (0 picks a free port), got {port}"
        in err
    )


def test_wal_tail_refuses_a_negative_count(capsys: pytest.CaptureFixture[str]) -> None:
    err = fails_to_parse(["wal", "tail", "s-1", "-n", "-2"], capsys)
    assert "argument -n/--count: must be a whole number, 0 or more, got -2" in err


def test_sim_names_the_option_of_a_bad_passivate_after(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = fails_to_parse(["sim", "gossip", "--passivate-after", "-1"], capsys)
    assert "argument --passivate-after: must be a number of seconds, 0 or more, got -1" in err
    assert "passivate_after" not in err


def test_sim_on_a_store_that_cannot_be_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nope" / "x.db"
    assert main(["sim", "gossip", "--agents", "2", "--sessions", "1", "--db", str(db)]) == 1
    err = capsys.readouterr().err
    # One line naming the store and why (its folder is missing: the lock file cannot be made).
    [line] = err.strip().splitlines()
    assert line.startswith(f"troupe sim: cannot open store '{db}': ")
    assert "No such file or directory" in line
    assert "Traceback" not in err


@pytest.mark.parametrize("grouped", [False, True])
def test_ctrl_c_is_one_line_and_exit_130(
    grouped: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        # trio raises KeyboardInterrupt out of trio.run, bare or in a group from a nursery.
        if grouped:
            raise BaseExceptionGroup("nursery", [KeyboardInterrupt()])
        raise KeyboardInterrupt

    monkeypatch.setattr("troupe.sim._console.run_sim", interrupted)
    assert main(["sim", "gossip"]) == 130
    assert capsys.readouterr().err.endswith("troupe sim: interrupted\n")


def test_a_store_error_in_a_group_is_one_line_per_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise ExceptionGroup("nursery", [StoreError("disk full while writing s-1")])

    monkeypatch.setattr("troupe.sim._console.run_sim", failing)
    assert main(["sim", "gossip"]) == 1
    assert capsys.readouterr().err.endswith("troupe sim: disk full while writing s-1\n")


@pytest.mark.parametrize("command", [["demo"], ["wal", "inspect"]])
def test_a_closed_pipe_exits_quietly(command: list[str], tmp_path: Path) -> None:
    # `troupe demo | head -1`: the reader is gone before troupe writes. (A pipe whose read
    # end is closed fails every write with EPIPE, so this does not depend on timing.)
    if command[0] == "wal":
        assert main(["demo", "--db", str(tmp_path / "hub.db")]) == 0
        command = [*command, "--db", str(tmp_path / "hub.db")]
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "troupe", *command],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 141


def test_serve_that_cannot_bind_leaves_no_store_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "hub.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--db", str(db), "--port", str(port)]) == 1
    assert f"troupe serve: cannot serve on 127.0.0.1:{port}: [Errno" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []


def test_demo_keeps_its_store_with_db_and_refuses_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "hub.db"
    assert main(["demo", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"troupe demo: a hub on {db} (kept: troupe wal inspect --db {db})\n")
    assert main(["wal", "verify", "--db", str(db)]) == 0
    assert "is sound" in capsys.readouterr().out
    assert main(["demo", "--db", str(db)]) == 2
    assert capsys.readouterr().err == f"troupe demo: {db} exists; --db wants a new file\n"


def test_wal_inspect_of_an_unknown_session_has_the_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "hub.db"
    assert main(["demo", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["wal", "inspect", "deadbeef", "--db", str(db)]) == 2
    assert capsys.readouterr().err == "troupe wal: no session 'deadbeef' in this store\n"
