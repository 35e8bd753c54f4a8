"""A read-only web inspector of a hub: its agents, sessions and transcripts, supervision tree,
statistics over time and audit log, as pages and as JSON under ``/api/``, with a live feed.

``troupe serve --inspect-port PORT`` serves it next to a hub, ``troupe inspect --db FILE``
for a store at rest. It needs the ``inspect`` extra (``pip install 'trio-troupe[inspect]'``:
Starlette and Hypercorn).
"""

from ._app import inspector_app as inspector_app
from ._feed import FEED_CAPACITY as FEED_CAPACITY
from ._feed import MAX_VIEWERS as MAX_VIEWERS
from ._serve import serve_inspector as serve_inspector
from ._sources import HubSource as HubSource
from ._sources import SessionFilter as SessionFilter
from ._sources import Source as Source
from ._sources import StoreSource as StoreSource

__all__ = (
    "FEED_CAPACITY",
    "MAX_VIEWERS",
    "HubSource",
    "SessionFilter",
    "Source",
    "StoreSource",
    "inspector_app",
    "serve_inspector",
)
