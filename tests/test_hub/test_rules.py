"""The access globs: the post path's shortcuts decide as ``fnmatchcase`` does (issue 15)."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest

from troupe.hub._rules import glob_allows

NAMES = ("alice", "bob", "a*", "a?c", "[ab]", "", "Alice", "abc")
PATTERNS = (
    "*",
    "alice",
    "a*",
    "a?c",
    "[ab]",
    "[!a]*",
    "",
    "ALICE",
    "al[i]ce",
    "b*b",
    "\\*",
)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_one_pattern_decides_as_fnmatchcase(pattern: str, name: str) -> None:
    assert glob_allows((pattern,), name) is fnmatchcase(name, pattern)


def test_any_pattern_of_several_allows() -> None:
    assert glob_allows(("x", "y*", "bob"), "bob")
    assert glob_allows(("x", "b?b"), "bob")
    assert not glob_allows(("x", "y*"), "bob")
    assert not glob_allows((), "bob")
