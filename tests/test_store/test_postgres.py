"""What only the PostgreSQL engine has: its schema, its lock, its connections and their loss.

The behaviour every engine shares is tested over all of them (``conftest.reopen``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

import troupe
from troupe.model import TaskMetadata, TaskState, dumps
from troupe.store import PostgresStore, Snapshot, open_store
from troupe.store import _postgres as pg

from .._postgres import new_schema
from ..test_transport._wire import eventually, wait_until
from .crash_writer import check_nothing_returned_was_lost, kill_mid_write
from .factories import agent, env, envs, session, task

Connection = psycopg.Connection[Any]


@pytest.fixture
def schema(pg_schemas: list[str]) -> str:
    return new_schema(pg_schemas)


@pytest.fixture
def admin(pg_dsn: str) -> Any:
    """A plain autocommit connection to the test server, for looking behind the store."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


def write_conn(store: PostgresStore) -> Connection:
    """The store's write connection (the one holding its lock)."""
    assert store._batches is not None
    assert store._batches.conn is not None
    return store._batches.conn


def backend_pid(store: PostgresStore) -> int:
    pid: int = write_conn(store).info.backend_pid
    return pid


def test_import_troupe_does_not_import_psycopg() -> None:
    code = "import sys, troupe, troupe.store; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_open_store_takes_a_postgresql_url() -> None:
    for url in ("postgresql://u@h:5432/db", "postgres://u@h/db"):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        assert (store.dsn, store.schema) == (url, "troupe")


def test_the_password_stays_out_of_messages() -> None:
    store = PostgresStore("postgresql://u:s3cret@h/db")
    assert "s3cret" not in repr(store)
    assert "s3cret" not in repr(PostgresStore("host=h password=s3cret dbname=db"))


@pytest.mark.parametrize("bad", ["Troupe", "a-b", "x" * 64, "pg_store", "1abc", "a;drop"])
def test_a_schema_name_must_be_a_plain_identifier(bad: str) -> None:
    with pytest.raises(ValueError, match="schema must be a lower-case identifier"):
        PostgresStore("postgresql://u@h/db", schema=bad)


async def test_open_hub_takes_a_postgresql_url(pg_dsn: str, pg_schemas: list[str]) -> None:
    pg_schemas.append("troupe")  # the default schema: dropped after the test
    async with troupe.open_hub(pg_dsn, ttl_sweep_interval=0) as hub:
        await hub.register(troupe.Passport(name="ann"))
    async with PostgresStore(pg_dsn) as store:
        assert [a.passport.name for a in await store.load_agents()] == ["ann"]


async def test_the_schema_is_created_once_and_versioned(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    for _ in range(2):
        async with PostgresStore(pg_dsn, schema=schema) as store:
            await store.append("s1", [env("s1", await store.last_seq("s1") + 1)])
    meta = dict(admin.execute(f"SELECT key, value FROM {schema}.troupe_meta").fetchall())
    assert meta == {"magic": pg.MAGIC, "version": str(pg.SCHEMA_VERSION)}
    assert admin.execute(f"SELECT count(*) FROM {schema}.wal").fetchone() == (2,)


async def test_a_schema_1_store_gets_the_change_feed_and_keeps_its_terminal_tasks(
    pg_dsn: str, schema: str, admin: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as old:
        old.setattr(pg, "MIGRATIONS", pg.MIGRATIONS[:1])
        old.setattr(pg, "SCHEMA_VERSION", 1)
        async with PostgresStore(pg_dsn, schema=schema):
            pass
    done, running = task("t1", state=TaskState.FAILED), task("t2", state=TaskState.RUNNING)
    for t in (done, running):
        admin.execute(
            f"INSERT INTO {schema}.tasks (task_id, metadata) VALUES (%s, %s)",
            (t.task_id, dumps(t).decode()),
        )
    async with PostgresStore(pg_dsn, schema=schema) as store:
        assert await store.last_change() == 0
        everything = await store.changes(-1)  # from before the feed: all at change 0
        assert everything.version == 0
        assert sorted(everything.tasks, key=lambda t: t.task_id) == [done, running]
        assert await store.save_open_task(task("t1")) == done
        assert await store.save_open_task(task("t2", state=TaskState.COMPLETED)) is None
    meta = dict(admin.execute(f"SELECT key, value FROM {schema}.troupe_meta").fetchall())
    assert meta["version"] == str(pg.SCHEMA_VERSION) == "2"


async def test_a_schema_of_other_tables_is_refused_and_left_alone(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    admin.execute(f"CREATE SCHEMA {schema}")
    admin.execute(f"CREATE TABLE {schema}.orders (id int)")
    with pytest.raises(
        troupe.IncompatibleStore, match=rf"{schema!r} is not a troupe store.*orders"
    ):
        async with PostgresStore(pg_dsn, schema=schema):
            pass
    tables = admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    assert tables.fetchall() == [("orders",)]


async def test_a_store_of_a_newer_schema_is_refused(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    async with PostgresStore(pg_dsn, schema=schema):
        pass
    admin.execute(f"UPDATE {schema}.troupe_meta SET value = '99' WHERE key = 'version'")
    with pytest.raises(troupe.IncompatibleStore, match=r"newer troupe.*schema 99"):
        async with PostgresStore(pg_dsn, schema=schema):
            pass


async def test_a_second_store_on_one_schema_is_refused_naming_the_holder(
    pg_dsn: str, schema: str
) -> None:
    async with PostgresStore(pg_dsn, schema=schema) as first:
        pid = backend_pid(first)
        holder = rf"backend pid {pid} \(troupe pid {os.getpid()} on .+, from"
        with pytest.raises(troupe.StoreLocked, match=holder):
            async with PostgresStore(pg_dsn, schema=schema):
                pass
        # A cluster node does not take the lock (it fences instead).
        async with PostgresStore(pg_dsn, schema=schema, exclusive=False) as node:
            assert await node.last_seq("s1") == 0
    async with PostgresStore(pg_dsn, schema=schema):  # released when the first closed
        pass


async def test_other_schemas_are_other_stores(pg_dsn: str, pg_schemas: list[str]) -> None:
    one, two = new_schema(pg_schemas), new_schema(pg_schemas)
    async with PostgresStore(pg_dsn, schema=one) as a, PostgresStore(pg_dsn, schema=two) as b:
        await a.append("s1", envs("s1", 1, 2))
        assert await b.last_seq("s1") == 0


async def test_connections_carry_the_timeouts_and_keepalives(pg_dsn: str, schema: str) -> None:
    async with PostgresStore(pg_dsn, schema=schema, threaded=False) as store:
        conn = write_conn(store)
        shown = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("statement_timeout", "idle_in_transaction_session_timeout", "search_path")
        }
        assert shown == {
            "statement_timeout": ("10s",),
            "idle_in_transaction_session_timeout": ("5s",),
            "search_path": (schema,),
        }
        params = conn.info.get_parameters()
        assert {key: params.get(key) for key in pg.KEEPALIVES} == pg.KEEPALIVES


async def test_settings_in_the_dsn_win(pg_dsn: str, schema: str) -> None:
    dsn = f"{pg_dsn}?keepalives_idle=30&options=-c%20statement_timeout%3D2500"
    async with PostgresStore(dsn, schema=schema, threaded=False) as store:
        conn = write_conn(store)
        assert conn.info.get_parameters()["keepalives_idle"] == "30"
        assert conn.execute("SHOW statement_timeout").fetchone() == ("2500ms",)


async def test_a_damaged_envelope_is_refused_naming_session_and_seq(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store.append("s1", envs("s1", 1, 3))
        # Still valid JSON, another text: only the checksum tells.
        admin.execute(
            f"UPDATE {schema}.wal SET envelope = convert_to(replace(convert_from(envelope, "
            "'UTF8'), 'message 2', 'message 9'), 'UTF8') WHERE seq = 2"
        )
        assert [e.seq for e in await store.read("s1", until=1)] == [1]
        with pytest.raises(troupe.StoreError, match=r"session 's1'.*seq 2 is damaged"):
            await store.read("s1")
        with pytest.raises(troupe.StoreError, match="seq 2 is damaged"):
            await store.read("s1", since=1)


async def test_names_are_unique_by_constraint(pg_dsn: str, schema: str, admin: Connection) -> None:
    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store.save_agent(agent("a1"))
    # Behind the store's own check: a row written around it is refused by the server.
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin.execute(
            f"INSERT INTO {schema}.agents (agent_id, name, passport, resume, rule) "
            "VALUES ('a2', 'name-a1', '{}', '{}', '{}')"
        )


async def test_two_stores_racing_for_names_and_terminal_tasks_each_have_one_winner(
    pg_dsn: str, schema: str
) -> None:
    # Two nodes' stores on one schema (a cluster's: not exclusive), each write in its own
    # worker thread: the server's constraint and conditional update judge every race.
    names = [f"n{i}" for i in range(12)]
    async with (
        PostgresStore(pg_dsn, schema=schema, exclusive=False) as a,
        PostgresStore(pg_dsn, schema=schema, exclusive=False) as b,
    ):
        won: dict[str, list[str]] = {name: [] for name in names}
        lost: dict[str, list[str]] = {name: [] for name in names}

        async def register(store: PostgresStore, node: str, name: str) -> None:
            record = agent(f"{node}-{name}")
            record = attrs.evolve(record, passport=attrs.evolve(record.passport, name=name))
            try:
                await store.save_agent(record)
            except troupe.NameTaken as exc:
                lost[name].append(exc.holder)
            else:
                won[name].append(f"{node}-{name}")

        outcomes: dict[str, list[object]] = {name: [] for name in names}

        async def finish(store: PostgresStore, name: str, state: TaskState) -> None:
            outcomes[name].append(await store.save_open_task(task(name, state=state)))

        # A third node follows the feed meanwhile: each read from where the last one
        # ended (its ``version``), as a node's sync does.
        followed: set[str] = set()
        since = 0
        writing = True

        async def follow() -> None:
            nonlocal since
            while writing:
                changes = await b.changes(since)
                followed.update(str(r.passport.agent_id) for r in changes.agents)
                followed.update(t.task_id for t in changes.tasks)
                since = changes.version

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            async with trio.open_nursery() as writers:
                for name in names:
                    writers.start_soon(register, a, "a", name)
                    writers.start_soon(register, b, "b", name)
                    writers.start_soon(finish, a, name, TaskState.COMPLETED)
                    writers.start_soon(finish, b, name, TaskState.FAILED)
            writing = False
        last = await a.changes(since)
        followed.update(str(r.passport.agent_id) for r in last.agents)
        followed.update(t.task_id for t in last.tasks)
        assert followed == {w for (w,) in won.values()} | set(names)  # nothing skipped
        for name in names:
            assert len(won[name]) == 1, (name, won)
            assert lost[name] == won[name], (name, lost)
            assert (await a.get_agent_named(name)) == (await b.get_agent(won[name][0]))
            first, second = sorted(outcomes[name], key=lambda o: o is not None)
            assert first is None
            assert isinstance(second, TaskMetadata)
            assert await a.get_task(name) == second  # the winner's, kept
        changes = await b.changes(0)
        winners = sorted(w for (w,) in won.values())
        assert sorted(str(r.passport.agent_id) for r in changes.agents) == winners


@pytest.mark.parametrize("threaded", [True, False])
async def test_a_lost_write_connection_is_replaced_and_the_lock_won_again(
    pg_dsn: str, schema: str, admin: Connection, threaded: bool
) -> None:
    async with PostgresStore(pg_dsn, schema=schema, threaded=threaded) as store:
        await store.append("s1", [env("s1", 1)])
        old = backend_pid(store)
        admin.execute("SELECT pg_terminate_backend(%s)", (old,))
        await store.append("s1", [env("s1", 2)])
        assert backend_pid(store) != old
        assert [e.seq for e in await store.read("s1")] == [1, 2]
        with pytest.raises(troupe.StoreLocked):
            async with PostgresStore(pg_dsn, schema=schema):
                pass


async def test_a_lost_read_connection_is_replaced(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    async with PostgresStore(pg_dsn, schema=schema, readers=1) as store:
        await store.append("s1", [env("s1", 1)])
        assert await store.last_seq("s1") == 1
        (reader,) = store._idle
        admin.execute("SELECT pg_terminate_backend(%s)", (reader.info.backend_pid,))
        assert await store.last_seq("s1") == 1
        assert store._idle[0] is not reader


async def test_a_writer_that_lost_the_lock_to_another_store_writes_nothing(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store.append("s1", [env("s1", 1)])
        # Waits (up to 5 s) until the backend has exited, and so released the lock: the
        # usurper must not find it still held (a loaded server ends a backend late).
        ended = admin.execute(
            "SELECT pg_terminate_backend(%s, 5000)", (backend_pid(store),)
        ).fetchone()
        assert ended == (True,)
        async with PostgresStore(pg_dsn, schema=schema) as usurper:
            with pytest.raises(troupe.StoreLocked, match="already open for writing"):
                await store.append("s1", [env("s1", 2)])
            assert await usurper.last_seq("s1") == 1


async def test_a_connection_lost_while_committing_is_an_unknown_outcome(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store.save_session(session("s1"))
        # A deferred trigger runs inside COMMIT: this one ends its own connection there.
        admin.execute(
            f"CREATE FUNCTION {schema}.die() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); "
            "PERFORM pg_sleep(1); RETURN NULL; END $$"
        )
        admin.execute(
            f"CREATE CONSTRAINT TRIGGER die AFTER INSERT ON {schema}.wal DEFERRABLE "
            f"INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.die()"
        )
        with pytest.raises(troupe.StoreError, match=r"lost while committing.*unknown"):
            await store.append("s1", [env("s1", 1)])
        admin.execute(f"DROP TRIGGER die ON {schema}.wal")
        # Read back to find out (here: not written), and go on on a new connection.
        assert await store.last_seq("s1") == 0
        await store.append("s1", [env("s1", 1)])
        assert await store.last_seq("s1") == 1


async def test_a_failed_commit_fails_every_write_of_the_batch(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    async with PostgresStore(pg_dsn, schema=schema) as store:
        admin.execute(
            f"CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.session_id = 'bad' THEN RAISE 'refused at commit'; END IF; "
            "RETURN NULL; END $$"
        )
        admin.execute(
            f"CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON {schema}.wal DEFERRABLE "
            f"INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.refuse()"
        )
        failures: list[str] = []

        async def append(session_id: str) -> None:
            try:
                await store.append(session_id, [env(session_id, 1)])
            except troupe.StoreError as exc:
                failures.append(f"{session_id}: {exc}")

        async with trio.open_nursery() as nursery:
            for session_id in ("good", "bad"):
                nursery.start_soon(append, session_id)
        assert len(failures) == 2, failures
        assert all("commit failed, nothing written: refused at commit" in f for f in failures)
        assert await store.last_seq("good") == await store.last_seq("bad") == 0
        assert store.statistics().failed_commits == 1


async def test_a_serialization_failure_is_retried_as_a_whole_batch(
    pg_dsn: str, schema: str
) -> None:
    attempts: list[str] = []

    def write(conn: Connection) -> None:
        attempts.append(conn.info.transaction_status.name)
        conn.execute("INSERT INTO kv VALUES ('n', 'k', '1')")
        if len(attempts) == 1:
            raise psycopg.errors.SerializationFailure("could not serialize access")

    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store._write(write)
        assert attempts == ["INTRANS", "INTRANS"]
        assert await store.load_kv("n") == {"k": 1}


async def test_an_unreachable_server_fails_after_the_retries() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = PostgresStore(f"postgresql://nobody:pw@127.0.0.1:{port}/db")
    with pytest.raises(troupe.StoreError, match=r"cannot open the store: cannot connect") as caught:
        async with store:
            pass
    assert "pw@" not in str(caught.value)


class Fence:
    """A cluster's epoch check in miniature: the session's row in ``epochs`` must match."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[tuple[str, str]] = []

    def __call__(self, conn: Connection, session_id: str) -> None:
        self.seen.append((session_id, conn.info.transaction_status.name))
        row = conn.execute(
            "SELECT epoch FROM epochs WHERE session_id = %s FOR SHARE", (session_id,)
        ).fetchone()
        if row is None or row[0] != self.epoch:
            raise troupe.StoreError(f"not the owner of session {session_id!r} any more")


async def test_a_fence_checks_each_session_write_in_its_own_transaction(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    fence = Fence(epoch=1)
    async with PostgresStore(pg_dsn, schema=schema, fence=fence) as store:
        admin.execute(f"CREATE TABLE {schema}.epochs (session_id text PRIMARY KEY, epoch int)")
        admin.execute(f"INSERT INTO {schema}.epochs VALUES ('s1', 1), ('s2', 1)")
        await store.save_session(session("s1"))
        await store.append("s1", [env("s1", 1)])
        await store.save_snapshot("s1", 1, {"n": 1})
        assert fence.seen == [("s1", "INTRANS")] * 3
        # Another node took s1 over: its writes are refused, s2's still land.
        admin.execute(f"UPDATE {schema}.epochs SET epoch = 2 WHERE session_id = 's1'")
        with pytest.raises(troupe.StoreError, match="not the owner of session 's1'"):
            await store.append("s1", [env("s1", 2)], metadata=session("s1"))
        with pytest.raises(troupe.StoreError, match="not the owner"):
            await store.save_snapshot("s1", 2, {"n": 2})
        await store.append("s2", [env("s2", 1)])
        assert [e.seq for e in await store.read("s1")] == [1]
        assert (await store.load_snapshot("s1")) == Snapshot(seq=1, state={"n": 1})
        assert await store.last_seq("s2") == 1


async def test_a_role_without_create_on_the_database_opens_its_existing_schema(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    role = f"{schema}_hub"  # a new role has no CREATE on the database
    admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
        dsn = pg_dsn.replace("postgres@", f"{role}@", 1)
        for _ in range(2):  # creates its tables, then opens them
            async with PostgresStore(dsn, schema=schema) as store:
                await store.append("s1", [env("s1", await store.last_seq("s1") + 1)])
        async with PostgresStore(dsn, schema=schema) as store:
            assert await store.last_seq("s1") == 2
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"DROP ROLE {role}")


async def test_a_malformed_dsn_is_refused_at_once() -> None:
    with pytest.raises(troupe.StoreError, match="not a PostgreSQL connection string"):
        async with PostgresStore("postgresql://h/db?no_such_option=1"):
            pass


async def test_kill_9_mid_write_loses_nothing_that_returned_and_frees_the_store(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    with trio.fail_after(30):
        printed, pid = await kill_mid_write(pg_dsn, schema)

        # The server ends the dead client's backends (and so its lock) once it sees the
        # socket closed.
        async def gone() -> bool:
            rows = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                (f"troupe pid {pid} on %",),
            ).fetchone()
            return rows == (0,)

        await eventually(gone)

    async with PostgresStore(pg_dsn, schema=schema) as store:
        await check_nothing_returned_was_lost(store, printed)


async def test_leaving_a_store_releases_its_lock_at_once(
    pg_dsn: str, schema: str, admin: Connection
) -> None:
    # Not when the server gets round to ending the closed connection's backend: a hub
    # restarted on the store at once must not find its own old lock.
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
    for _ in range(20):
        async with PostgresStore(pg_dsn, schema=schema):
            assert admin.execute(held).fetchone() == (1,)
        assert admin.execute(held).fetchone() == (0,)


def local_process(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def sigterm_pending(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM waiting (it is stopped, so it cannot act)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


async def test_a_lost_connection_the_server_still_thinks_alive_is_ended_for_the_lock(
    pg_dsn: str, schema: str
) -> None:
    async with PostgresStore(pg_dsn, schema=schema) as store:
        await store.append("s1", [env("s1", 1)])
        conn = write_conn(store)
        backend = conn.info.backend_pid
        if not local_process(backend):
            # Only with a DSN to a server elsewhere; CI starts its own here (.ci/postgres).
            reason = "the test server is not on this machine: its backends cannot be paused"
            if os.environ.get("CI"):
                pytest.fail(f"CI must run this test: {reason}")
            pytest.skip(reason)
        # A network cut the server has not noticed: the backend (paused here, so it cannot
        # notice) keeps the store's lock while the client's side of the socket is gone.
        os.kill(backend, signal.SIGSTOP)
        try:
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as cut:
                cut.shutdown(socket.SHUT_RDWR)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.append, "s1", [env("s1", 2)])
                # The store ends its own stale backend instead of calling itself locked.
                with trio.fail_after(10):
                    await wait_until(lambda: sigterm_pending(backend))
                os.kill(backend, signal.SIGCONT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(backend, signal.SIGCONT)
        assert [e.seq for e in await store.read("s1")] == [1, 2]
        assert backend_pid(store) != backend
