"""Checks of what a caller hands the hub, made before any actor sees it.

What the hub accepts it must be able to store, deliver and read back over any transport, so
a value that does not fit is the caller's error, named by field, and never an actor's crash:

- An envelope's caller-filled fields have their declared types (``event_type`` a non-empty
  string, ``depth`` an int >= 0, ``priority`` one of :data:`PRIORITIES`, …).
- JSON data (``event_data``, knobs, a task's payload, progress and result, checkpoints) is
  what orjson writes as JSON: objects with string keys, arrays, strings, integers within
  64 bits, finite floats, booleans and null (no ``set``, no subclass of ``dict`` or ``str``,
  no ``datetime``, no NaN or infinity, which JSON cannot carry). Tuples, enum members and
  UUIDs are written (and so read back) as arrays and strings.
- JSON data nests at most :data:`MAX_JSON_DEPTH` levels, counted from ``event_data`` (or
  from the request record); frames add three levels on the wire, and orjson writes 254.
- An envelope encodes to at most ``max_envelope_bytes`` (by default
  :data:`MAX_ENVELOPE_BYTES`): the WebSocket frame limit is that plus room for framing, so
  an envelope the hub accepted in process can always be delivered over the wire.

Cost on the post path: a few type tests, one walk of ``event_data`` that tests each value's
type once (for NaN, infinity and depth: about 50 ns a value, so a text envelope's few values
cost nothing and a 10 KB structured payload some tens of microseconds) and one
``orjson.dumps`` of the envelope, which its size needs anyway. Paths are worked out only
for an error.
"""

from __future__ import annotations

import math
from typing import Any, Final, TypeVar

import orjson

from .._errors import DecodeError, ProtocolError
from ._codec import CONVERTER, structure
from ._envelope import Envelope

#: How deep JSON data may nest (``{"a": 1}`` is 1 level), counted from ``event_data``.
MAX_JSON_DEPTH: Final = 64
#: The default (and largest) size of one envelope as JSON, in bytes.
MAX_ENVELOPE_BYTES: Final = 1 << 20
#: The values of ``Envelope.priority`` (reference §2.5; stored, not acted on).
PRIORITIES: Final = ("background", "normal", "urgent")

# Without these orjson would write a dict subclass, a datetime or a dataclass as JSON, and
# the in-process recipient would get an object that a WAL replay gives back as something else.
_STRICT: Final = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
T = TypeVar("T")
_ID_FIELDS: Final = ("task_id", "causation_id", "idempotency_key", "trace_id", "stream_id")


class _Bad(Exception):
    """A value that is not JSON data; ``path`` is filled in (innermost first) on the way up."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _refuse(record: str, field: str, reason: str) -> DecodeError:
    where = f"{record}.{field}" if field else record
    return DecodeError(f"{where}: {reason}", record=record, field=field)


def _dotted(field: str, bad: _Bad) -> str:
    return ".".join(part for part in (field, *reversed(bad.path)) if part)


def _kind(value: Any) -> str:
    return type(value).__name__


def check_envelope(envelope: Envelope, max_bytes: int = MAX_ENVELOPE_BYTES) -> int:
    """Refuse an envelope the hub could not store, deliver or read back as it was given.

    The hub-stamped fields (``envelope_id``, ``seq``, ``created_at``) are replaced on
    accept and only need their types.

    Args:
      envelope: the envelope a caller posts.
      max_bytes: the largest envelope, as JSON, that is accepted.

    Returns:
      The size of the envelope as JSON, in bytes.

    Raises:
      DecodeError: a field does not fit (``field`` names it, e.g. ``event_data.items.3``).
      ProtocolError: the envelope is larger than ``max_bytes``.
    """
    _check_fields(envelope)
    data = envelope.event_data
    try:
        _scan(data, 1)
        encoded = orjson.dumps(CONVERTER.unstructure(envelope), option=_STRICT)
    except (_Bad, orjson.JSONEncodeError) as exc:
        raise _explain(envelope) from exc
    size = len(encoded)
    if size > max_bytes:
        raise ProtocolError(
            f"envelope of {size} bytes ({envelope.event_type} from {envelope.sender_id}) "
            f"exceeds max_envelope_bytes ({max_bytes})"
        )
    return size


def _check_fields(env: Envelope) -> None:
    # Plain attribute reads, not a loop over names: this runs on every post.
    if type(env.session_id) is not str or not env.session_id:
        raise _not_a_string("session_id", env.session_id)
    if type(env.sender_id) is not str or not env.sender_id:
        raise _not_a_string("sender_id", env.sender_id)
    if type(env.event_type) is not str or not env.event_type:
        raise _not_a_string("event_type", env.event_type)
    if type(env.event_data) is not dict:
        raise _refuse("Envelope", "event_data", f"expected a dict, got {_kind(env.event_data)}")
    if env.audience is not None:
        for index, member in enumerate(env.audience):
            if type(member) is not str or not member:
                raise _not_a_string(f"audience.{index}", member)
    for field in _ID_FIELDS:
        value = getattr(env, field)
        if value is not None and type(value) is not str:
            raise _refuse("Envelope", field, f"expected a string or None, got {_kind(value)}")
    if type(env.priority) is not str or env.priority not in PRIORITIES:
        raise _refuse(
            "Envelope", "priority", f"expected one of {PRIORITIES}, got {env.priority!r:.80}"
        )
    if type(env.depth) is not int or env.depth < 0:
        raise _refuse("Envelope", "depth", f"expected an integer >= 0, got {env.depth!r:.80}")
    # Stamped by the hub (the caller's values are replaced), but a record of wrong types is
    # refused all the same.
    if type(env.envelope_id) is not str or type(env.created_at) is not str:
        raise _refuse("Envelope", "envelope_id", "envelope_id and created_at must be strings")
    if type(env.seq) is not int:
        raise _refuse("Envelope", "seq", f"expected an integer, got {_kind(env.seq)}")


def _not_a_string(field: str, value: Any) -> DecodeError:
    return _refuse("Envelope", field, f"expected a non-empty string, got {value!r:.80}")


_CONTAINERS: Final = frozenset({dict, list, tuple})


def _scan(value: Any, depth: int) -> None:
    """Raise a bare ``_Bad`` at a NaN or infinity, or where ``value`` nests too deep.

    The fast walk of every post: one type test per value (about 50 ns; a text envelope has
    a handful). orjson, which writes the data next, refuses what is not JSON; the path of
    either problem is found by :func:`_find_bad`, on the error path only.
    """
    if depth > MAX_JSON_DEPTH:
        raise _Bad("too deep")
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if kind in _CONTAINERS:
            _scan(item, depth + 1)
        elif kind is float and item - item:  # nan - nan and inf - inf are nan, not 0.0
            raise _Bad("not finite")


def _explain(env: Envelope) -> DecodeError:
    """Name the field of ``env`` that is not JSON data (the slow path of a refusal)."""
    try:
        _find_bad(env.event_data, 1)
    except _Bad as bad:
        return _refuse("Envelope", _dotted("event_data", bad), bad.reason)
    for field in ("session_id", "sender_id", "event_type", *_ID_FIELDS, "priority"):
        value = getattr(env, field)
        if isinstance(value, str) and not _utf8(value):
            return _refuse("Envelope", field, "a string with lone surrogates is not UTF-8")
    for index, member in enumerate(env.audience or ()):
        if not _utf8(member):
            return _refuse("Envelope", f"audience.{index}", "not UTF-8 (lone surrogates)")
    return DecodeError("Envelope is not JSON data", record="Envelope")


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _find_bad(value: Any, depth: int) -> None:
    """Raise ``_Bad``, with its path, at the first value that is not JSON data."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        if depth > MAX_JSON_DEPTH:
            raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
        items = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if kind is dict and type(key) is not str:
                raise _Bad(f"keys must be strings, got {key!r:.40} ({_kind(key)})")
            if isinstance(key, str) and not _utf8(key):
                raise _Bad(f"key {key!r:.40} is not UTF-8 (lone surrogates)")
            try:
                _find_bad(item, depth + 1)
            except _Bad as bad:
                bad.path.append(str(key))
                raise
    elif kind is float:
        if not math.isfinite(value):
            raise _Bad(f"{value} is not a JSON number")
    elif kind is str:
        if not _utf8(value):
            raise _Bad("a string with lone surrogates is not UTF-8")
    elif kind is int:
        if not -(1 << 63) <= value < 1 << 64:
            raise _Bad("an integer beyond 64 bits")
    elif kind is not bool and value is not None:
        try:
            orjson.dumps(value, option=_STRICT)
        except orjson.JSONEncodeError:
            raise _Bad(f"a {_kind(value)} is not JSON data") from None


def check_json(value: Any, field: str, *, record: str = "params", depth: int = 1) -> bytes:
    """Refuse ``value`` unless it is JSON data (see the module docstring); return its JSON.

    Args:
      value: the data.
      field: its name, for the error.
      record: what it is part of, for the error.
      depth: the nesting level ``value`` sits at (1: it is the top).

    Raises:
      DecodeError: naming the path of the first value that does not fit.
    """
    try:
        if type(value) in _CONTAINERS:
            _scan(value, depth)
        elif type(value) is float and value - value:
            raise _Bad("not finite")
        return orjson.dumps(value, option=_STRICT)
    except (_Bad, orjson.JSONEncodeError) as exc:
        try:
            _find_bad(value, depth)
        except _Bad as bad:
            raise _refuse(record, _dotted(field, bad), bad.reason) from exc
        raise _refuse(record, field, "not JSON data") from exc


def check_record(obj: T, max_bytes: int | None = MAX_ENVELOPE_BYTES) -> T:
    """Refuse a request record (a hub message) whose fields do not fit their types.

    The record is checked by the one converter, as if it had come over the wire: every field
    has its declared type, and its JSON data is JSON (see :func:`check_json`), at most
    ``max_bytes`` in all (None: no bound).

    Returns:
      The record as the wire would deliver it (a ``"running"`` given for a
      ``TaskState`` is ``TaskState.RUNNING`` in it): use it instead of ``obj``.

    Raises:
      DecodeError: naming the record and the dotted path of the field.
      ProtocolError: the record is larger than ``max_bytes`` as JSON.
    """
    record = type(obj).__name__
    try:
        data = CONVERTER.unstructure(obj)
    except (AttributeError, TypeError, ValueError) as exc:
        # An enum field holding a str, a record field holding a dict, ...: the hooks fail.
        raise DecodeError(f"cannot read {record}: {exc}", record=record) from exc
    checked = structure(data, type(obj))
    check_data(data, record, max_bytes)
    return checked


def check_data(data: dict[str, Any], record: str, max_bytes: int | None) -> bytes:
    """Refuse the JSON data of a request record (what :func:`check_record` checks once the
    converter has structured it): JSON, nested at most :data:`MAX_JSON_DEPTH` levels, at
    most ``max_bytes`` as JSON (None: no bound). Return its JSON.

    A record structured from ``data`` by the one converter has the same JSON data (the
    converter passes ``dict[str, Any]`` fields through as they are), so a request that
    arrived as data (a request frame's params) is checked on them, once.

    Raises:
      DecodeError: naming ``record`` and the dotted path of the value.
      ProtocolError: the data is larger than ``max_bytes`` as JSON.
    """
    encoded = check_json(data, "", record=record, depth=0)
    if max_bytes is not None and len(encoded) > max_bytes:
        raise ProtocolError(f"{record} of {len(encoded)} bytes exceeds {max_bytes} bytes")
    return encoded
