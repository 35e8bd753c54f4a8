"""The control plane over a wire: one generic dispatcher for every ``RequestFrame``.

A frame's ``op`` names a request record of ``troupe.api``; its params are structured into
that record by the one converter (a missing, unknown or mistyped field is the caller's
``bad_frame`` naming it), the hub runs it with the connection as the caller
(``Hub.call``: the identity the record names as acting must be bound to this connection,
and the stored owner it declares must match), and the result is unstructured into the
answer. The reference executed RPC ops for whatever id a parameter named (its §9 item 14);
here an op naming an identity this connection is not bound to is refused with
``access_denied``. Discovery (agents, resumes, skills) is public.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import _tracing
from .._errors import DecodeError, NetworkError, NotOwner, StoreError
from ..api import REQUESTS
from ..model import FRAME_TYPES, RequestFrame, ResponseFrame, unstructure
from ..model._codec import prepare
from ._connection import Caller

if TYPE_CHECKING:
    from ._hub import Hub

log = logging.getLogger("troupe.hub.rpc")


def error_code(exc: Exception) -> str:
    """The code an error travels under on the wire (the client raises it again from it)."""
    if isinstance(exc, NetworkError | NotOwner):
        return exc.code
    return "store_error" if isinstance(exc, StoreError) else "error"


def error_details(exc: Exception, hub: Hub) -> dict[str, Any] | None:
    """What an error's code carries besides its message: for ``not_owner`` the shard, the
    owner, its epoch and the address it advertises (from this node's last read of the
    cluster when the error did not say: a fence's refusal does not know it)."""
    if not isinstance(exc, NotOwner):
        return None
    address = exc.address
    cluster = hub.core.cluster
    if address is None and exc.owner is not None and cluster is not None:
        address = cluster.address_of(exc.owner)
    return {"shard": exc.shard, "owner": exc.owner, "epoch": exc.epoch, "address": address}


def prepare_wire_codec() -> None:
    """Make the converter's functions for every frame, request and result now (~35 ms),
    not on the first request of each kind (a server calls it before it listens)."""
    prepare(FRAME_TYPES)
    prepare(REQUESTS.values())
    prepare(kind.result_type for kind in REQUESTS.values())


async def handle_request(hub: Hub, caller: Caller, frame: RequestFrame) -> ResponseFrame:
    """Run one request and answer it; errors become ``ok=False`` with their code."""
    tracer = _tracing.ACTIVE
    if tracer is None:
        return await _handle_request(hub, caller, frame)
    with tracer.rpc_server(frame) as answered:
        response = await _handle_request(hub, caller, frame)
        answered(response)
        return response


async def _handle_request(hub: Hub, caller: Caller, frame: RequestFrame) -> ResponseFrame:
    try:
        kind = REQUESTS.get(frame.op)
        if kind is None:
            raise DecodeError(f"unknown op {frame.op!r}", record="RequestFrame", field="op")
        result = unstructure(await hub.call_data(kind, frame.params, caller=caller))
    except (NetworkError, StoreError) as exc:
        return ResponseFrame(
            request_id=frame.request_id,
            ok=False,
            error_code=error_code(exc),
            error_message=str(exc),
            error_details=error_details(exc, hub),
        )
    except Exception as exc:
        # An edge: a bug in an op must not take the connection (and its identities) down.
        log.exception("op %r failed", frame.op)
        return ResponseFrame(
            request_id=frame.request_id,
            ok=False,
            error_code="error",
            error_message=f"internal error in {frame.op}: {type(exc).__name__}",
        )
    return ResponseFrame(request_id=frame.request_id, ok=True, result=result)
