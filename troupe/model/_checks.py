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

Cost on the post path: one ``orjson.dumps`` of the envelope (which the size needs anyway)
and a few type checks; the data is walked (for NaN and depth) only when its JSON contains a
``null`` or more brackets than the depth limit.
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
_ID_FIELDS: Final = ("task_id", "causation_id", "idempotency_key", "trace_id")


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
    try:
        encoded = orjson.dumps(CONVERTER.unstructure(envelope), option=_STRICT)
    except orjson.JSONEncodeError as exc:
        raise _explain(envelope, exc) from exc
    size = len(encoded)
    if size > max_bytes:
        raise ProtocolError(
            f"envelope of {size} bytes ({envelope.event_type} from {envelope.sender_id}) "
            f"exceeds max_envelope_bytes ({max_bytes})"
        )
    # orjson writes NaN and infinity as null; and a payload with no more brackets than the
    # depth limit cannot nest deeper. Either way, only then is the data walked.
    if b"null" in encoded or encoded.count(b"[") + encoded.count(b"{") > MAX_JSON_DEPTH:
        _scan_field(envelope.event_data, "Envelope", "event_data", 1)
    return size


def _check_fields(env: Envelope) -> None:
    for field in ("session_id", "sender_id", "event_type"):
        value = getattr(env, field)
        if type(value) is not str or not value:
            raise _refuse("Envelope", field, f"expected a non-empty string, got {value!r:.80}")
    if type(env.event_data) is not dict:
        raise _refuse("Envelope", "event_data", f"expected a dict, got {_kind(env.event_data)}")
    if env.audience is not None:
        for index, member in enumerate(env.audience):
            if type(member) is not str or not member:
                raise _refuse(
                    "Envelope",
                    f"audience.{index}",
                    f"expected a non-empty string, got {member!r:.80}",
                )
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


def _explain(env: Envelope, exc: orjson.JSONEncodeError) -> DecodeError:
    """Name the field orjson could not write (it does not say where)."""
    try:
        _find_unwritable(env.event_data, 1)
    except _Bad as bad:
        return _refuse("Envelope", _dotted("event_data", bad), bad.reason)
    for field in ("session_id", "sender_id", "event_type", *_ID_FIELDS, "priority"):
        value = getattr(env, field)
        if isinstance(value, str) and not _utf8(value):
            return _refuse("Envelope", field, "a string with lone surrogates is not UTF-8")
    for index, member in enumerate(env.audience or ()):
        if not _utf8(member):
            return _refuse("Envelope", f"audience.{index}", "not UTF-8 (lone surrogates)")
    return DecodeError(f"Envelope is not JSON data: {exc}", record="Envelope")


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _find_unwritable(value: Any, depth: int) -> None:
    """Raise ``_Bad`` at the first value orjson refuses to write (the slow, exact path)."""
    kind = type(value)
    if kind is dict:
        if depth > MAX_JSON_DEPTH:
            raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
        for key, item in value.items():
            if type(key) is not str:
                raise _Bad(f"keys must be strings, got {key!r:.40} ({_kind(key)})")
            if not _utf8(key):
                raise _Bad(f"key {key!r:.40} is not UTF-8 (lone surrogates)")
            try:
                _find_unwritable(item, depth + 1)
            except _Bad as bad:
                bad.path.append(key)
                raise
    elif kind is list or kind is tuple:
        if depth > MAX_JSON_DEPTH:
            raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
        for index, item in enumerate(value):
            try:
                _find_unwritable(item, depth + 1)
            except _Bad as bad:
                bad.path.append(str(index))
                raise
    elif kind is str:
        if not _utf8(value):
            raise _Bad("a string with lone surrogates is not UTF-8")
    elif kind is int:
        if not -(1 << 63) <= value < 1 << 64:
            raise _Bad("an integer beyond 64 bits")
    elif kind is not float and kind is not bool and value is not None:
        try:
            orjson.dumps(value, option=_STRICT)
        except orjson.JSONEncodeError:
            raise _Bad(f"a {_kind(value)} is not JSON data") from None


def _scan_field(value: Any, record: str, field: str, depth: int) -> None:
    try:
        _scan(value, depth)
    except _Bad as bad:
        raise _refuse(record, _dotted(field, bad), bad.reason) from None


def _scan(value: Any, depth: int) -> None:
    """Raise ``_Bad`` at a NaN or infinity, or where the data nests too deep.

    The rest was checked by orjson, which wrote the data.
    """
    if depth > MAX_JSON_DEPTH:
        raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                bad = _Bad(f"{item} is not a JSON number")
                bad.path.append(str(key))
                raise bad
        elif kind is dict or kind is list or kind is tuple:
            try:
                _scan(item, depth + 1)
            except _Bad as bad:
                bad.path.append(str(key))
                raise


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
        encoded = orjson.dumps(value, option=_STRICT)
    except orjson.JSONEncodeError as exc:
        try:
            _find_unwritable(value, depth)
        except _Bad as bad:
            raise _refuse(record, _dotted(field, bad), bad.reason) from exc
        raise DecodeError(f"{record}.{field} is not JSON data: {exc}", record=record) from exc
    if type(value) is float and not math.isfinite(value):
        raise _refuse(record, field, f"{value} is not a JSON number")
    if type(value) in (dict, list, tuple) and (
        b"null" in encoded or encoded.count(b"[") + encoded.count(b"{") > MAX_JSON_DEPTH
    ):
        _scan_field(value, record, field, depth)
    return encoded


def check_record(obj: T, max_bytes: int = MAX_ENVELOPE_BYTES) -> T:
    """Refuse a request record (a hub message) whose fields do not fit their types.

    The record is checked by the one converter, as if it had come over the wire: every field
    has its declared type, and its JSON data is JSON (see :func:`check_json`), at most
    ``max_bytes`` in all.

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
    encoded = check_json(data, "", record=record, depth=0)
    if len(encoded) > max_bytes:
        raise ProtocolError(f"{record} of {len(encoded)} bytes exceeds {max_bytes} bytes")
    return checked
