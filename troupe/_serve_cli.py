"""``troupe serve``: a hub on SQLite, reachable over WebSocket, until SIGINT or SIGTERM.

With ``--store postgresql://…`` the hub is one node of a cluster on that database
(``troupe.cluster``): it claims a fair share of the shards, serves their sessions, and hands
its shards over when it stops. With ``--cluster-key-file`` it forwards requests for the
other shards' sessions to their owners and delivers to agents connected elsewhere; without
it, it refuses those requests with ``NotOwner``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from . import ApiKeyAuth, NoAuth, StoreError, open_hub
from .hub import AuthAdapter, Hub
from .hub._rpc import prepare_wire_codec
from .transport import serve_ws
from .transport._ws import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS

if TYPE_CHECKING:
    from .cluster import ClusterMember

log = logging.getLogger("troupe.serve")

MISSING_INSPECT = "the inspector needs the 'inspect' extra: pip install 'trio-troupe[inspect]'"


def load_api_keys(path: Path) -> dict[str, str]:
    """Read ``{"agent name": "token", ...}`` from a JSON file.

    Raises:
      ValueError: the file is not a JSON object of strings (the message names the file).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read API keys from {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path} must hold a JSON object of agent name -> token strings")
    return data


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_keys: dict[str, str] | None, allow_anonymous: bool) -> None:
    """Refuse to serve without keys beyond this machine unless asked to.

    Raises:
      ValueError: ``host`` is not loopback, there are no API keys and no ``--allow-anonymous``.
    """
    if api_keys is None and not allow_anonymous and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {host} without --api-keys: anyone who reaches it could "
            "register and bind agents under any free name; give --api-keys FILE, or "
            "--allow-anonymous to accept that"
        )


class InspectorPortError(OSError):
    """Raised when the inspector's port cannot be bound (the message names it)."""


def check_available() -> None:
    """Raises ValueError (the CLI's bad-option exit) when the ``inspect`` extra is missing."""
    try:
        import hypercorn  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"{MISSING_INSPECT} ({exc})") from exc


def read_key(path: Path, what: str = "operator key") -> str:
    """The key in ``path`` (its first line, without surrounding blanks); ``what`` names it
    in errors (the operator key, the cluster key).

    Raises:
      ValueError: the file cannot be read or holds no key (the message names it).
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the {what} from {path}: {exc}") from exc
    lines = text.strip().splitlines()
    key = lines[0].strip() if lines else ""
    if not key:
        raise ValueError(f"{path} holds no {what} (one line of text)")
    return key


def operator_key(key_file: str | None, api_keys: bool) -> str | None:
    """The key ``troupe serve --inspect-port`` asks for: required with ``--api-keys``.

    Raises:
      ValueError: ``--api-keys`` without ``--inspect-key-file``, or an unreadable file.
    """
    if key_file is None:
        if api_keys:
            raise ValueError(
                "--inspect-port with --api-keys needs --inspect-key-file FILE: the operator "
                "key the inspector asks for (agents' keys do not open it)"
            )
        return None
    return read_key(Path(key_file))


async def run_beside(
    hub: Hub,
    host: str,
    port: int,
    key: str | None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the inspector of ``hub`` until cancelled; started with the port bound."""
    from .inspect import HubSource, inspector_app, serve_inspector  # the inspect extra

    source = HubSource(hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        try:
            bound: int = await nursery.start(
                serve_inspector, inspector_app(source, key=key), host, port
            )
        except* OSError as group:
            first = _leaves(group)[0]
            raise InspectorPortError(
                f"the inspector cannot serve on {host}:{port}: {first}"
            ) from None
        task_status.started(bound)


@attrs.frozen(kw_only=True)
class NodeOptions:
    """``troupe serve --store postgresql://…``: this node of a cluster on that database."""

    store: str
    schema: str = "troupe"
    node_id: str = ""
    advertise: str = ""
    shards: int = 32
    #: ``--lease``, ``--tick``, ``--margin``: ClusterConfig's defaults unless given.
    lease_s: float = 10.0
    tick_s: float = 2.0
    margin_s: float = 2.0
    #: ``--cluster-key-file``: where the cluster key is (None: the node does not route).
    key_file: str | None = None
    #: The key read from it (by ``main``; never shown in a repr).
    secret: str | None = attrs.field(default=None, repr=False)


def default_node_id() -> str:
    """``HOST-PID`` in the characters a node id may hold (at most 63)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "node"
    return f"{host[:50]}-{os.getpid()}"


@asynccontextmanager
async def _open_node_hub(
    options: NodeOptions, auth: list[AuthAdapter], host: str, port: int
) -> AsyncIterator[tuple[Hub, ClusterMember]]:
    """A hub that is a node of the cluster on ``options.store`` (module docstring)."""
    from .cluster import ClusterConfig, ClusterMember, PostgresCoordinator
    from .store import PostgresStore

    config = ClusterConfig(
        node_id=options.node_id or default_node_id(),
        address=options.advertise or f"ws://{host}:{port}",
        shards=options.shards,
        lease_s=options.lease_s,
        tick_s=options.tick_s,
        margin_s=options.margin_s,
        secret=options.secret,
    )
    async with PostgresCoordinator(options.store, schema=options.schema) as coordinator:
        member = ClusterMember(config, coordinator)
        fence = coordinator.fence(config.node_id, config.shards, member.claimed)
        store = PostgresStore(options.store, schema=options.schema, exclusive=False, fence=fence)
        async with open_hub(store, auth=auth, cluster=member) as hub:
            yield hub, member


@asynccontextmanager
async def _open_any_hub(
    db: Path, node: NodeOptions | None, auth: list[AuthAdapter], host: str, port: int
) -> AsyncIterator[tuple[Hub, ClusterMember | None]]:
    if node is None:
        async with open_hub(db, auth=auth) as hub:
            yield hub, None
    else:
        async with _open_node_hub(node, auth, host, port) as (hub, member):
            yield hub, member


async def serve(
    db: Path,
    host: str,
    port: int,
    api_keys: dict[str, str] | None,
    *,
    ping_interval: float = 20.0,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
    node: NodeOptions | None = None,
    inspect_port: int | None = None,
    inspect_key: str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; leaving flushes everything and closes the store (a
    cluster node hands its shards over first).

    With ``inspect_port``, the web inspector runs on ``host`` at that port too (asking for
    ``inspect_key`` when one is given).
    """
    auth: list[AuthAdapter] = [ApiKeyAuth(api_keys)] if api_keys is not None else [NoAuth()]
    prepare_wire_codec()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            _open_any_hub(db, node, auth, host, port) as (hub, member),
            trio.open_nursery() as nursery,
        ):
            server = await nursery.start(
                lambda task_status: serve_ws(
                    hub,
                    host,
                    port,
                    ping_interval=ping_interval,
                    ping_timeout=ping_interval,
                    max_connections=max_connections,
                    max_connections_per_address=max_connections_per_address,
                    task_status=task_status,
                )
            )
            bound = server.port
            scheme = "api keys" if api_keys is not None else "no auth"
            if member is not None:
                if node is not None and not node.advertise and port == 0:
                    # The port was the system's pick: advertise the one bound (next tick).
                    member.config = attrs.evolve(member.config, address=f"ws://{host}:{bound}")
                log.info(
                    "cluster node %s (%s), schema %s, %s",
                    member.config.node_id,
                    member.config.address,
                    node.schema if node is not None else "-",
                    "routing (cluster key given)"
                    if member.routes
                    else "not routing (no --cluster-key-file: other nodes' sessions are "
                    "refused with not_owner)",
                )
            where = db if node is None else "PostgreSQL"
            log.info("serving %s on ws://%s:%d (%s)", where, host, bound, scheme)
            print(f"listening on ws://{host}:{bound}", flush=True)
            if inspect_port is not None:
                shown: int = await nursery.start(run_beside, hub, host, inspect_port, inspect_key)
                web_host = f"[{host}]" if ":" in host else host
                print(f"inspector on http://{web_host}:{shown}", flush=True)
            async for signum in signals:
                log.info("got %s: stopping", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
    log.info("stopped; %s closed cleanly", db if node is None else "the node")


def main(
    db: str,
    host: str,
    port: int,
    api_keys_file: str | None,
    *,
    allow_anonymous: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
    node: NodeOptions | None = None,
    inspect_port: int | None = None,
    inspect_key_file: str | None = None,
) -> int:
    """Run ``troupe serve``; ValueError for bad options (the CLI exits 2 with its message)."""
    if max_connections < 1 or max_connections_per_address < 1:
        raise ValueError("--max-connections and --max-connections-per-address must be >= 1")
    if node is not None:
        if not node.store.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "--store must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DB), got "
                f"{node.store!r}; an SQLite file is --db"
            )
        from .cluster import ClusterConfig

        if node.key_file is not None:
            node = attrs.evolve(node, secret=read_key(Path(node.key_file), "cluster key"))
        try:
            ClusterConfig(
                node_id=node.node_id or default_node_id(),
                shards=node.shards,
                lease_s=node.lease_s,
                tick_s=node.tick_s,
                margin_s=node.margin_s,
                secret=node.secret,
            )
        except ValueError as bad:
            if node.secret is not None and "secret" in str(bad):
                raise ValueError(f"--cluster-key-file {node.key_file}: {bad}") from None
            raise
    keys = load_api_keys(Path(api_keys_file)) if api_keys_file is not None else None
    check_exposure(host, keys, allow_anonymous)
    inspect_key = None
    if inspect_port is not None:
        check_available()
        inspect_key = operator_key(inspect_key_file, keys is not None)
    elif inspect_key_file is not None:
        raise ValueError("--inspect-key-file is for the inspector: give --inspect-port too")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path = Path(db)
    made = [p for p in _store_files(path) if not p.exists()]  # what a failed start removes
    failed = False
    try:
        trio.run(
            partial(
                serve,
                path,
                host,
                port,
                keys,
                max_connections=max_connections,
                max_connections_per_address=max_connections_per_address,
                node=node,
                inspect_port=inspect_port,
                inspect_key=inspect_key,
            )
        )
    except* OSError as group:
        # The port is taken, the host is not ours: say so in one line, not a traceback, and
        # leave no empty store behind (the store opens before the port is bound).
        failed = True
        for exc in _leaves(group):
            where = (
                "" if isinstance(exc, InspectorPortError) else f"cannot serve on {host}:{port}: "
            )
            print(f"troupe serve: {where}{exc}", file=sys.stderr)
        if path in made and node is None:
            for created in made:
                created.unlink(missing_ok=True)
    except* StoreError as group:
        failed = True
        for exc in _leaves(group):
            print(f"troupe serve: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _store_files(db: Path) -> list[Path]:
    """The files an SQLite store at ``db`` may create: the file, its journals and its lock."""
    suffixes = ("-wal", "-shm", "-journal", ".lock")
    return [db, *(db.with_name(db.name + suffix) for suffix in suffixes)]


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    out: list[Exception] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
