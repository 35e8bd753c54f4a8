"""Hypothesis strategies for every troupe record, derived from the records' own annotations.

A record that gains a field of a type this module does not know fails loudly here, so a new
record or field cannot slip past the round-trip tests untested.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

import attrs
from hypothesis import strategies as st

import troupe.model
from troupe.model import InboxBlock

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON_VALUES, max_size=4)

#: Fields whose values a validator restricts.
OVERRIDES: dict[tuple[type[Any], str], st.SearchStrategy[Any]] = {
    (InboxBlock, "overflow"): st.sampled_from(["block", "reject", "drop_newest"]),
    (InboxBlock, "block_timeout"): st.none() | st.floats(min_value=0.001, max_value=1e6),
}

#: Every attrs record that ``troupe.model`` exports.
RECORDS: list[type[Any]] = [
    obj
    for name in troupe.model.__all__
    if isinstance(obj := getattr(troupe.model, name), type) and attrs.has(obj)
]


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of the annotation ``tp`` that JSON can carry."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        Any: JSON_VALUES,
        str: TEXT,
        int: INTS,
        float: FLOATS,
        bool: st.booleans(),
        type(None): st.none(),
    }
    if tp in simple:
        return simple[tp]
    if origin in (typing.Union, types.UnionType):
        return st.one_of([for_type(arg) for arg in args])
    if origin is tuple and args[-1] is Ellipsis:
        return st.lists(for_type(args[0]), max_size=3).map(tuple)
    if origin is dict:
        if args[1] is Any:
            return JSON_OBJECTS
        return st.dictionaries(for_type(args[0]), for_type(args[1]), max_size=3)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    if isinstance(tp, type) and attrs.has(tp):
        return records(tp)
    raise TypeError(f"no strategy for {tp!r}: teach tests/test_model/strategies.py about it")


def records(cls: type[Any]) -> st.SearchStrategy[Any]:
    """A strategy for instances of the attrs record ``cls``, every field drawn."""
    hints = typing.get_type_hints(cls)
    fields = {
        a.name: OVERRIDES[cls, a.name] if (cls, a.name) in OVERRIDES else for_type(hints[a.name])
        for a in attrs.fields(cls)
        if a.init
    }
    return st.builds(cls, **fields)
