"""The built-in registry, and that the package stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import troupe.session_types
from troupe import NotFoundError
from troupe.session_types import (
    AnySessionType,
    AuctionType,
    BroadcastType,
    ConsultingType,
    ConversationType,
    DiscussionType,
    NotificationType,
    WorkflowType,
    builtin_types,
    get,
)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("consulting", ConsultingType),
        ("conversation", ConversationType),
        ("discussion", DiscussionType),
        ("auction", AuctionType),
        ("broadcast", BroadcastType),
        ("notification", NotificationType),
        ("workflow", WorkflowType),
    ],
)
def test_get_returns_each_builtin(name: str, cls: type[AnySessionType]) -> None:
    found = get(name)
    assert isinstance(found, cls)
    assert (found.name, found.version) == (name, 1)
    assert get(name, version=1) is found


@pytest.mark.parametrize(("name", "version"), [("nope", 1), ("consulting", 2), ("Consulting", 1)])
def test_get_names_what_is_missing(name: str, version: int) -> None:
    with pytest.raises(NotFoundError, match=f"no built-in session type {name}@v{version} ") as info:
        get(name, version)
    assert (
        "auction@v1, broadcast@v1, consulting@v1, conversation@v1, discussion@v1,"
        " notification@v1, workflow@v1"
    ) in str(info.value)


def test_builtin_types_lists_each_once_in_name_order() -> None:
    types = builtin_types()
    assert [t.name for t in types] == [
        "auction",
        "broadcast",
        "consulting",
        "conversation",
        "discussion",
        "notification",
        "workflow",
    ]
    types.clear()
    assert len(builtin_types()) == 7


def test_the_package_never_imports_trio() -> None:
    package = Path(troupe.session_types.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "trio" or n.startswith("trio.") for n in names), path.name
