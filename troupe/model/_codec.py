"""The one converter between troupe records and JSON (the only module that imports cattrs).

Rules the converter keeps, for every record and frame:

- JSON is produced and parsed by orjson; enums travel by value, tuples as arrays, and a
  field equal to its default is left out (decoding fills it in again).
- Decoding is strict: unknown keys, missing fields, wrong types (no ``"5"`` for an int, no
  ``5`` for a str, no ``true`` for an int), unknown frame kinds and malformed JSON all raise
  :class:`troupe.DecodeError` naming the record and the dotted path of the field.
- ``dict[str, Any]`` fields (``event_data``, ``payload``, …) hold JSON data: they are
  checked to be objects with string keys and then passed through, not walked, because they
  sit on the envelope's hot path. The hub walks them once, when it admits a post or a
  request (NaN, depth, size: see ``_checks.py``), whichever way they came.
- Frames are tagged by ``"kind"`` (each frame class's ``kind`` ClassVar); nested envelopes
  are plain objects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar, get_origin

import attrs
import cattrs
import orjson
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_mapping,
    is_sequence,
    list_structure_factory,
    mapping_structure_factory,
)
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter

from .._errors import DecodeError
from ._envelope import Envelope
from ._frames import FRAME_TYPES, Frame, InvalidFrame, ResponseFrame, SessionStatus

T = TypeVar("T")

# omit_if_default: a typical envelope is ~210 bytes instead of ~330 (half its fields are
# usually None or defaults), and decoding passes fewer keywords (2.3 vs 3.2 us per envelope).
CONVERTER: Final = make_converter(forbid_extra_keys=True, omit_if_default=True)


_JSON_NAMES: Final[dict[type[Any], str]] = {
    dict: "object",
    list: "array",
    tuple: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _type_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _strict(kind: type[Any]) -> Callable[[Any, Any], Any]:
    # cattrs' default hooks call ``str(v)`` / ``int(v)``, which would accept 5 for a str
    # field and "5" for an int one; JSON from the wire must fit exactly.
    expected = _JSON_NAMES[kind]

    def structure(value: Any, _: Any) -> Any:
        if type(value) is kind:
            return value
        raise TypeError(f"expected {expected}, got {_type_name(value)}")

    return structure


def _structure_float(value: Any, _: Any) -> float:
    # JSON does not tell 1 from 1.0, so an int is a fine float (but a bool is not).
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise TypeError(f"expected number, got {_type_name(value)}")


def _checked(
    accepted: tuple[type[Any], ...], inner: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    # The generated hooks iterate whatever they are given: a string would pass as a list of
    # characters and a dict as a list of its keys. Check the JSON shape first.
    expected = _JSON_NAMES[accepted[0]]

    def structure(value: Any, cl: Any) -> Any:
        if type(value) not in accepted:
            raise TypeError(f"expected {expected}, got {_type_name(value)}")
        return inner(value, cl)

    return structure


def _is_json_object(t: Any) -> bool:
    return bool(t == dict[str, Any])


def _structure_json_object(value: Any, _: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError(f"expected object, got {_type_name(value)}")
    for key in value:
        if type(key) is not str:
            raise TypeError(f"expected string keys, got {_type_name(key)}")
    return value


def _is_enum(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


def _structure_enum(cls: type[enum.Enum]) -> Callable[[Any, Any], enum.Enum]:
    # ``cls(value)`` looks the value up in this table first too, through ``EnumMeta.__call__``
    # (0.23 us a field, three in a session's metadata); anything else (unhashable,
    # ``_missing_``) still goes the long way.
    members = {member.value: member for member in cls}

    def structure(value: Any, _: Any) -> enum.Enum:
        try:
            return members[value]
        except (KeyError, TypeError):
            pass
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"expected one of {[m.value for m in cls]}, got {value!r}") from None

    return structure


def _sequence_hook(cl: Any) -> Callable[[Any, Any], Any]:
    if get_origin(cl) is tuple:
        return _checked((list, tuple), homogenous_tuple_structure_factory(cl, CONVERTER))
    return _checked((list, tuple), list_structure_factory(cl, CONVERTER))


for _kind in (str, int, bool):
    CONVERTER.register_structure_hook(_kind, _strict(_kind))
CONVERTER.register_structure_hook(float, _structure_float)
CONVERTER.register_structure_hook_factory(
    attrs.has, lambda cl: _checked((dict,), CONVERTER.gen_structure_attrs_fromdict(cl))
)
CONVERTER.register_structure_hook_factory(is_sequence, _sequence_hook)
CONVERTER.register_structure_hook_factory(
    is_mapping, lambda cl: _checked((dict,), mapping_structure_factory(cl, CONVERTER, dict))
)
# JSON data (event_data, payload, …) is passed through, not walked: it is on the hot path.
CONVERTER.register_structure_hook_func(_is_json_object, _structure_json_object)
CONVERTER.register_unstructure_hook_func(_is_json_object, lambda value: value)
CONVERTER.register_structure_hook_factory(_is_enum, _structure_enum)


def _written_as_it_is(cls: type[Any], field: str) -> None:
    """Unstructure ``cls`` with its ``field`` (typed ``Any``, JSON data already) passed
    through as it is, instead of walked again by its runtime type."""
    overrides: dict[str, Any] = {field: override(unstruct_hook=lambda value: value)}
    CONVERTER.register_unstructure_hook(
        cls,
        make_dict_unstructure_fn(
            cls, CONVERTER, _cattrs_omit_if_default=CONVERTER.omit_if_default, **overrides
        ),
    )


# An answer's result is JSON data already (the hub unstructured the op's result): walked by
# its runtime type, it was 9 of the 10 µs that encoding a session's metadata took, on every
# RPC over the wire.
_written_as_it_is(ResponseFrame, "result")
# A delivery's session status travels with its state dumped to JSON data (``dump_state``):
# walked, it was 1.8 of the 3.3 µs of a delivery's frame.
_written_as_it_is(SessionStatus, "state")
# By value, so ``unstructure`` returns plain JSON data that any JSON library can write. A
# value that is not a member is passed on as it is, for ``structure`` to refuse by field
# name (``check_record`` unstructures what a caller built by hand).
CONVERTER.register_unstructure_hook_factory(
    _is_enum, lambda cls: lambda e: e.value if isinstance(e, cls) else e
)

_FRAMES_BY_KIND: Final[dict[str, type[Any]]] = {cls.kind: cls for cls in FRAME_TYPES}


def _path_and_cause(exc: BaseException) -> tuple[list[str], BaseException]:
    """Follow a cattrs validation error down to the first leaf, collecting the field path."""
    path: list[str] = []
    while isinstance(exc, BaseValidationError) and exc.exceptions:
        sub = exc.exceptions[0]
        for note in getattr(sub, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                path.append(note.name)
                break
            if isinstance(note, IterableValidationNote):
                path.append(str(note.index))
                break
        exc = sub
    if isinstance(exc, ForbiddenExtraKeysError):
        path.append(sorted(exc.extra_fields)[0])
    return path, exc


def _decode_error(exc: Exception, record: str) -> DecodeError:
    path, cause = _path_and_cause(exc)
    field = ".".join(path)
    if isinstance(cause, ForbiddenExtraKeysError):
        reason = "unknown field"
    elif isinstance(cause, KeyError):
        reason = "missing field"
    else:
        reason = str(cause) or type(cause).__name__
    where = f"{record}.{field}" if field else record
    return DecodeError(f"cannot decode {where}: {reason}", record=record, field=field)


def unstructure(obj: Any) -> Any:
    """Turn a record (or a list or dict of them) into JSON data.

    Args:
      obj: a troupe record, or plain data that may contain records.

    Returns:
      Plain dicts, lists, strings, numbers, booleans and ``None``.
    """
    return CONVERTER.unstructure(obj)


def structure(data: Any, cls: type[T]) -> T:
    """Build a ``cls`` record from JSON data, strictly.

    Args:
      data: what :func:`unstructure` (or a JSON parser) produced.
      cls: the record class to build.

    Returns:
      The record.

    Raises:
      DecodeError: the data does not fit ``cls`` (unknown key, missing field, wrong type);
        ``record`` and ``field`` say where.
    """
    try:
        return CONVERTER.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise _decode_error(exc, cls.__name__) from exc


def prepare(kinds: Iterable[Any]) -> None:
    """Make the converter's functions for ``kinds`` (record types, ``list[...]``…) now.

    cattrs generates a type's structure and unstructure functions on first use, ~0.5 ms
    each with what they call: a server that prepares the types it decodes before it
    listens does not charge that to its first requests (~10 ms of a fresh ``troupe serve``'s
    first 2,000 posts went there).

    Args:
      kinds: the types to prepare (``None`` and ``NoneType`` are skipped).
    """
    for kind in kinds:
        if kind is None or kind is type(None):
            continue
        CONVERTER.get_structure_hook(kind)
        CONVERTER.get_unstructure_hook(kind)


def _parse(data: str | bytes, record: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"cannot decode {record}: malformed JSON ({exc})", record=record) from exc


def _to_json(data: Any, record: str) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise DecodeError(f"cannot encode {record} as JSON: {exc}", record=record) from exc


def dumps(obj: Any) -> bytes:
    """Encode a record (or JSON data holding records) as compact UTF-8 JSON.

    Args:
      obj: a troupe record or JSON data.

    Returns:
      The JSON bytes.

    Raises:
      DecodeError: ``obj`` holds something JSON cannot carry (an int beyond 64 bits; in a
        record's JSON data field, a set or a non-string key too); ``record`` names its type.
        A plain dict given as ``obj`` is the converter's: its keys are written as strings,
        its sets as lists.
    """
    if type(obj) is dict:
        # JSON data (an audit record, a snapshot, a kv value): orjson writes it directly,
        # 0.3 instead of 2.9 us for an audit record, three of which every new session
        # writes. Whatever the converter would write differently (a record, a dataclass, a
        # datetime, a set, bytes, a subclass, a non-string key) orjson refuses with these
        # options, and it goes the converter's way below: the output is the same.
        try:
            return orjson.dumps(obj, option=_AS_THE_CONVERTER_WRITES)
        except orjson.JSONEncodeError:
            pass
    return _to_json(CONVERTER.unstructure(obj), type(obj).__name__)


#: orjson options that make it refuse what the converter writes its own way (see ``dumps``).
_AS_THE_CONVERTER_WRITES: Final = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def loads(data: str | bytes, cls: type[T]) -> T:
    """Decode JSON text into a ``cls`` record, strictly (see :func:`structure`).

    Args:
      data: JSON as text or UTF-8 bytes.
      cls: the record class to build.

    Returns:
      The record.

    Raises:
      DecodeError: malformed JSON, or JSON that does not fit ``cls``.
    """
    return structure(_parse(data, cls.__name__), cls)


def encode_frame(frame: Frame) -> str:
    """Encode a transport frame as one JSON object tagged with its ``"kind"``.

    Args:
      frame: any of the frame records.

    Returns:
      JSON text (one WebSocket text message).

    Raises:
      DecodeError: the frame holds something JSON cannot carry.
    """
    body = {"kind": frame.kind, **CONVERTER.unstructure(frame)}
    return _to_json(body, type(frame).__name__).decode()


def decode_frame(text: str | bytes) -> Frame:
    """Decode one JSON frame, dispatching on its ``"kind"``.

    Args:
      text: the JSON object, as text or UTF-8 bytes.

    Returns:
      The frame record.

    Raises:
      DecodeError: malformed JSON, a missing or unknown ``kind``, or fields that do not fit
        the frame (``record`` is the frame class, ``field`` the dotted path, e.g.
        ``envelope.seq``).
    """
    return _frame_of(_parse(text, "Frame"))


def _frame_of(data: Any, where: str = "") -> Frame:
    """The frame ``data`` (parsed JSON) is; ``where`` prefixes error messages."""
    if type(data) is not dict:
        reason = f"expected object, got {_type_name(data)}"
        raise DecodeError(f"{where}cannot decode Frame: {reason}", record="Frame")
    kind = data.pop("kind", None)
    cls = _FRAMES_BY_KIND.get(kind) if type(kind) is str else None
    if cls is None:
        reason = "missing field" if kind is None else f"unknown kind {kind!r}"
        raise DecodeError(
            f"{where}cannot decode Frame.kind: {reason}", record="Frame", field="kind"
        )
    try:
        frame: Frame = structure(data, cls)
    except DecodeError as exc:
        if not where:
            raise
        raise DecodeError(f"{where}{exc}", record=exc.record, field=exc.field) from exc
    return frame


def encode_batch(texts: Sequence[str]) -> str:
    """One WebSocket message carrying several encoded frames, in order.

    A batch is a JSON array of frame objects; a single frame travels alone, as the plain
    object :func:`encode_frame` made (so a peer that never batches sends what it always did).

    Args:
      texts: frames encoded by :func:`encode_frame`, at least one.

    Returns:
      The message's JSON text.
    """
    if len(texts) == 1:
        return texts[0]
    return "[" + ",".join(texts) + "]"


def batch_overhead(count: int) -> int:
    """Bytes a batch of ``count`` frames adds to their own (brackets and commas)."""
    return 0 if count <= 1 else count + 1


def decode_frames(text: str | bytes) -> Frame | list[Frame]:
    """Decode one WebSocket message: a frame (a JSON object) or a batch (an array of them).

    The frames of a batch are decoded one by one, as if each had come alone: one that does
    not decode becomes an :class:`InvalidFrame` whose reason names its index (``frame 2 of
    a batch of 5: cannot decode ReceiptFrame.seq: ...``) and whose ``request_id`` is the
    element's own if it has one, and the others are kept.

    Args:
      text: the message, as text or UTF-8 bytes.

    Returns:
      The frame, or the batch's frames in order.

    Raises:
      DecodeError: the message as a whole is not a frame nor a batch: malformed JSON, not
        an object nor an array, an empty array, or (a lone object) a frame that does not fit.
    """
    data = _parse(text, "Frame")
    if type(data) is not list:
        return _frame_of(data)
    if not data:
        raise DecodeError("cannot decode Frame: an empty batch", record="Frame")
    count = len(data)
    frames: list[Frame] = []
    for index, item in enumerate(data):
        where = f"frame {index} of a batch of {count}: "
        request_id = item.get("request_id") if type(item) is dict else None
        try:
            frames.append(_frame_of(item, where))
        except DecodeError as exc:
            frames.append(
                InvalidFrame(
                    reason=str(exc), request_id=request_id if type(request_id) is str else ""
                )
            )
    return frames


def envelope_from_json(data: str | bytes) -> Envelope:
    """Decode an envelope the store wrote itself, skipping the per-field checks.

    Rows written by :func:`dumps` are trusted: a plain ``Envelope(**fields)`` takes about
    two thirds of the checked path's time (2.4 vs 3.8 us here), which WAL replay pays per
    envelope. A row that does not
    fit (another writer, a bug) falls back to the checked path for a precise error.

    Args:
      data: the JSON of one envelope.

    Returns:
      The envelope.

    Raises:
      DecodeError: the row is not an envelope.
    """
    fields = _parse(data, "Envelope")
    try:
        return Envelope(**fields)
    except TypeError:
        return structure(fields, Envelope)
