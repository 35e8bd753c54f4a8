"""What the parts of the ``Hub`` handle share."""

from __future__ import annotations

from typing import Any

from ..model import check_record
from ..supervisors import Supervisor
from . import _hub_messages as H
from ._auth import AuthRegistry
from ._core import Failed, HubCore
from ._expectations import ExpectationSweeper


class HubBase:
    """The state and the one call every part of :class:`~troupe.hub.Hub` uses."""

    _core: HubCore
    auth: AuthRegistry
    _sessions: Supervisor | None
    _expectations: ExpectationSweeper

    async def _call(self, msg: H.HubMsg) -> Any:
        """Ask the hub actor; raise what it refused with.

        The message is checked first, as a request from the wire would be: a value of the
        wrong type (or not JSON data) is the caller's ``DecodeError``, never the actor's
        crash (a crash of the hub actor counts against the root supervisor).
        """
        assert self._core.hub_ref is not None
        msg = check_record(msg, self._core.config.max_envelope_bytes)
        result = await self._core.hub_ref.ask(msg)
        if isinstance(result, Failed):
            raise result.error
        return result
