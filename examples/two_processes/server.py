"""The hub process: a hub on SQLite, served over WebSocket, until SIGINT or SIGTERM.

This is what ``troupe serve --db hub.db --port 8765 --api-keys keys.json`` does, written out
with the public API so you can embed it in your own trio program::

    python examples/two_processes/server.py --db hub.db --port 8765 --api-keys keys.json

It prints ``listening on ws://HOST:PORT`` once clients can connect (``--port 0`` picks a
free port), and on SIGINT/SIGTERM it stops: every accepted envelope is committed and the
file reopens cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from pathlib import Path

import trio

from troupe import ApiKeyAuth, NoAuth, open_hub
from troupe.hub import AuthAdapter
from troupe.transport import serve_ws


async def main(db: Path, host: str, port: int, keys_file: Path | None) -> None:
    auth: list[AuthAdapter] = [NoAuth()]
    if keys_file is not None:
        # {"agent name": "token", ...}: each agent must present its own key.
        auth = [ApiKeyAuth(json.loads(await trio.Path(keys_file).read_text()))]
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_hub(db, auth=auth) as hub, trio.open_nursery() as nursery:
            server = await nursery.start(serve_ws, hub, host, port)
            print(f"listening on ws://{host}:{server.port}", flush=True)
            async for signum in signals:
                print(f"got {signal.Signals(signum).name}; stopping", flush=True)
                break
            nursery.cancel_scope.cancel()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("hub.db"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-keys", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, args.db, args.host, args.port, args.api_keys)
