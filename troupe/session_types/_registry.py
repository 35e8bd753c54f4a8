"""The built-in session types, looked up by name and version.

The hub registers ``builtin_types()`` when it starts and adds user types with
``hub.register_session_type(obj)``; ``get`` answers for the built-ins only.
"""

from __future__ import annotations

from typing import Final

from .._errors import NotFoundError
from ._auction import AuctionType
from ._base import AnySessionType
from ._broadcast import BroadcastType
from ._consulting import ConsultingType
from ._conversation import ConversationType
from ._discussion import DiscussionType
from ._notification import NotificationType
from ._workflow import WorkflowType

# Session types are stateless, so one shared instance of each serves every hub.
_BUILTINS: Final[dict[tuple[str, int], AnySessionType]] = {
    (t.name, t.version): t
    for t in (
        AuctionType(),
        BroadcastType(),
        ConsultingType(),
        ConversationType(),
        DiscussionType(),
        NotificationType(),
        WorkflowType(),
    )
}


def get(name: str, version: int = 1) -> AnySessionType:
    """The built-in session type called ``name`` at ``version``.

    Args:
        name: The ``manifest_type``, e.g. ``"consulting"``.
        version: The ``manifest_version``.

    Returns:
        The session type.

    Raises:
        NotFoundError: When no built-in has that name and version (the message names
            ``"<name>@v<version>"``).
    """
    try:
        return _BUILTINS[name, version]
    except KeyError:
        known = ", ".join(f"{n}@v{v}" for n, v in sorted(_BUILTINS))
        raise NotFoundError(
            f"no built-in session type {name}@v{version} (built-ins: {known})"
        ) from None


def builtin_types() -> list[AnySessionType]:
    """Every built-in session type, in name order.

    Returns:
        A new list each call.
    """
    return [_BUILTINS[key] for key in sorted(_BUILTINS)]
