"""``troupe wal inspect|tail|verify --db hub.db [SESSION]``: look into a store, offline.

It opens the store read-only (no write lock), so it works while a hub runs on it; it reads
through the same ``Store`` protocol the hub uses, without starting a hub. ``verify`` also
checks the file below the protocol: SQLite's quick_check, every WAL row's checksum, and that
no agent name is held twice.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import trio

from ._errors import StoreError
from .model import EV_SESSION_CLOSED, EV_SESSION_EXPIRED, Envelope, SessionMetadata
from .session_types import builtin_types
from .store import SQLiteStore, Store


def _line(env: Envelope, names: dict[str, str]) -> str:
    who = names.get(env.sender_id, env.sender_id)
    body = env.text if env.text is not None else ", ".join(sorted(env.event_data))
    return f"{env.seq:>6}  {env.created_at}  {who:<16} {env.event_type:<28} {body}"


async def _names(store: Store) -> dict[str, str]:
    return {r.passport.agent_id or "": r.passport.name for r in await store.load_agents()}


async def _find(store: Store, session: str) -> SessionMetadata:
    md = await store.get_session(session)
    if md is None:
        raise LookupError(f"no session {session!r} in this store")
    return md


async def inspect(store: Store, session: str | None) -> list[str]:
    names = await _names(store)
    if session is None:
        out = [f"{len(names)} agents"]
        for md in await store.load_sessions():
            who = ", ".join(names.get(p, p) for p in md.participant_ids())
            last = await store.last_seq(md.session_id)
            reason = f" ({md.close_reason})" if md.close_reason else ""
            out.append(
                f"{md.session_id}  {md.manifest_type:<13} {md.state.value}{reason:<24} "
                f"seq {last:<6} {who}"
            )
        return out
    md = await _find(store, session)
    wal = await store.read(session)
    kinds = Counter(e.event_type for e in wal)
    snapshot = await store.load_snapshot(session)
    out = [
        f"session    {md.session_id}",
        f"type       {md.manifest_type}@v{md.manifest_version}",
        f"state      {md.state.value} {md.close_reason}".rstrip(),
        f"created    {md.created_at}   expires {md.expires_at or '-'}",
        "creator    " + names.get(md.creator_id, md.creator_id),
        "members    " + ", ".join(names.get(p, p) for p in md.participant_ids()),
        f"envelopes  {len(wal)}   snapshot at seq {snapshot.seq if snapshot else '-'}",
    ]
    out += [f"  {count:>6}  {kind}" for kind, count in kinds.most_common()]
    return out


async def tail(store: Store, session: str, count: int) -> list[str]:
    await _find(store, session)
    names = await _names(store)
    last = await store.last_seq(session)
    return [_line(e, names) for e in await store.read(session, since=max(0, last - count))]


async def verify(store: Store, session: str | None) -> list[str]:
    """Problems found (empty when the store is sound)."""
    types = {(t.name, t.version): t for t in builtin_types()}
    sessions = [await _find(store, session)] if session is not None else await store.load_sessions()
    problems: list[str] = []
    for md in sessions:
        sid = md.session_id
        try:
            wal = await store.read(sid)
        except StoreError as exc:  # a damaged row; check_file names every one
            problems.append(f"{sid}: cannot be read back: {exc}")
            continue
        seqs = [e.seq for e in wal]
        if seqs != list(range(1, len(wal) + 1)):
            problems.append(f"{sid}: seq is not 1..{len(wal)} without gaps")
        if any(e.session_id != sid for e in wal):
            problems.append(f"{sid}: holds envelopes of another session")
        if md.state.terminal and (
            not wal or wal[-1].event_type not in (EV_SESSION_CLOSED, EV_SESSION_EXPIRED)
        ):
            problems.append(f"{sid}: {md.state.value} but its WAL does not end with the notice")
        stype = types.get((md.manifest_type, md.manifest_version))
        if stype is None:
            continue  # a custom session type: nothing to refold with here
        state = stype.initial_state(md)
        snapshot = await store.load_snapshot(sid)
        for env in wal:
            if not env.event_type.startswith(("troupe.session.", "troupe.task.")):
                state = stype.fold(env, state)
            if snapshot is not None and env.seq == snapshot.seq:
                if stype.dump_state(state) != snapshot.state:
                    problems.append(f"{sid}: the snapshot at seq {env.seq} differs from a refold")
    return problems


async def run(db: Path, action: str, session: str | None, count: int) -> tuple[int, list[str]]:
    notes: list[str] = []
    async with SQLiteStore(db, threaded=False, read_only=True) as store:
        try:
            if action == "inspect":
                return 0, await inspect(store, session)
            if action == "tail":
                if session is None:  # the parser requires it; a direct caller may not
                    return 2, ["tail needs a SESSION"]
                return 0, await tail(store, session, count)
            problems, notes = await store.check_file()
            problems += await verify(store, session)
        except LookupError as exc:
            return 2, [str(exc.args[0])]
    if problems:
        return 1, problems + notes
    checked = "1 session" if session is not None else "every session"
    return 0, [
        f"ok: {checked} of {db} is sound (seq without gaps, notices, snapshots, checksums)",
        *notes,
    ]


def main(db: str, action: str, session: str | None, count: int) -> int:
    """Print what ``action`` finds; errors go to stderr as one line, with exit code 2."""
    if not Path(db).exists():
        print(f"troupe wal: no store at {db}", file=sys.stderr)
        return 2
    try:
        code, lines = trio.run(run, Path(db), action, session, count)
    except StoreError as exc:  # not a troupe store, a newer schema, an unreadable file
        print(f"troupe wal: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        if code == 2:
            print(f"troupe wal: {line}", file=sys.stderr)
        else:
            print(line)
    return code
