"""Transports: how a client reaches a hub (in-process LocalLink; WebSocket)."""

from ._local import LocalEndpoint as LocalEndpoint
from ._local import LocalLink as LocalLink
from ._local import LocalLinkClient as LocalLinkClient
from ._ws import MAX_FRAME_BYTES as MAX_FRAME_BYTES
from ._ws import WsEndpoint as WsEndpoint
from ._ws import WsLink as WsLink
from ._ws import WsLinkClient as WsLinkClient
from ._ws import WsServer as WsServer
from ._ws import serve_ws as serve_ws

__all__ = (
    "MAX_FRAME_BYTES",
    "LocalEndpoint",
    "LocalLink",
    "LocalLinkClient",
    "WsEndpoint",
    "WsLink",
    "WsLinkClient",
    "WsServer",
    "serve_ws",
)
