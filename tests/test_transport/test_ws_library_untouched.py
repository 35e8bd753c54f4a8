"""troupe changes no library at import (websockets, which drives its connections, nor
trio-websocket); the tests' trio-websocket fixes are their own connections'."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import trio_websocket

from . import _wire

#: Imports every troupe package, then checks trio-websocket's classes and module are as
#: they were before (in a fresh interpreter: the test process imported troupe long ago).
CHECK = textwrap.dedent(
    """
    import inspect
    import trio_websocket, trio_websocket._impl as impl

    def snapshot():
        names = {f"trio_websocket.{k}": v for k, v in vars(trio_websocket).items()}
        names.update((f"_impl.{k}", v) for k, v in vars(impl).items())
        for cls_name, cls in vars(impl).items():
            if inspect.isclass(cls):
                names.update((f"{cls_name}.{k}", v) for k, v in vars(cls).items())
        return names

    before = snapshot()
    import troupe, troupe.client, troupe.hub, troupe.sim, troupe.store, troupe.testing
    import troupe.transport
    after = snapshot()
    changed = sorted(n for n in before.keys() | after.keys() if before.get(n) is not after.get(n))
    print(changed)
    """
)


#: The same for the modules of websockets that troupe's driver uses.
CHECK_WEBSOCKETS = textwrap.dedent(
    """
    import inspect
    import websockets.client, websockets.frames, websockets.protocol, websockets.server
    import websockets.http11, websockets.uri
    MODULES = (websockets.client, websockets.frames, websockets.protocol, websockets.server,
               websockets.http11, websockets.uri)

    def snapshot():
        names = {}
        for module in MODULES:
            for k, v in vars(module).items():
                names[f"{module.__name__}.{k}"] = v
                if inspect.isclass(v) and v.__module__ == module.__name__:
                    names.update((f"{module.__name__}.{k}.{a}", b) for a, b in vars(v).items())
        return names

    before = snapshot()
    import troupe, troupe.client, troupe.hub, troupe.sim, troupe.store, troupe.testing
    import troupe.transport
    after = snapshot()
    changed = sorted(n for n in before.keys() | after.keys() if before.get(n) is not after.get(n))
    print(changed)
    """
)


def test_importing_troupe_changes_nothing_in_websockets() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK_WEBSOCKETS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "[]", f"importing troupe changed websockets: {out}"


def test_importing_troupe_changes_nothing_in_trio_websocket() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]", f"importing troupe changed trio-websocket: {out}"


def test_the_library_methods_are_its_own_and_troupe_overrides_them_in_a_subclass() -> None:
    conn = trio_websocket.WebSocketConnection
    for name in ("_handle_ping_event", "_send"):
        method = vars(conn)[name]
        assert method.__module__ == "trio_websocket._impl", name
        assert method.__qualname__ == f"WebSocketConnection.{name}", name
        # The names the tests' subclass overrides are still there to override: a release that
        # renames them would silently drop the fixes (trio-websocket is pinned <0.13 for it).
        assert name in vars(_wire._Connection), name
    assert issubclass(_wire._Connection, conn)
    for private in ("_reader_task", "_open_handshake", "_get_request", "_wsproto"):
        # What _wrap_client / _wrap_server use, as the library's wrap_*_stream do.
        assert private in vars(conn) or private in conn.__init__.__code__.co_names, private
