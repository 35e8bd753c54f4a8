"""Transports: how a client reaches a hub (in-process LocalLink; WebSocket)."""

from ._local import LocalEndpoint as LocalEndpoint
from ._local import LocalLink as LocalLink
from ._local import LocalLinkClient as LocalLinkClient

__all__ = ("LocalEndpoint", "LocalLink", "LocalLinkClient")
