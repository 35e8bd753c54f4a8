"""The public surface: every package's ``__all__`` is a literal tuple of real names.

(ruff's RUF022 keeps each one sorted.)
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import troupe

PACKAGE_DIR = Path(troupe.__file__).parent


def public_modules() -> list[str]:
    names = ["troupe"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="troupe."):
        leaf = info.name.rsplit(".", 1)[-1]
        if info.ispkg and not leaf.startswith("_"):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", public_modules())
def test_all_is_a_literal_tuple_of_real_names(name: str) -> None:
    module = importlib.import_module(name)
    source = Path(module.__file__ or "").read_text()
    literal = None
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            literal = ast.literal_eval(node.value)
    assert isinstance(literal, tuple), f"{name}.__all__ must be a literal tuple"
    assert len(set(literal)) == len(literal), f"{name}.__all__ has duplicates"
    for attr in literal:
        assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which is not there"


def test_public_names_do_not_leak_private_modules() -> None:
    for name in troupe.__all__:
        obj = getattr(troupe, name)
        module = getattr(obj, "__module__", "troupe")
        assert module.startswith("troupe"), (name, module)


def test_errors_form_one_tree() -> None:
    assert issubclass(troupe.NetworkError, troupe.TroupeError)
    for cls in (
        troupe.NotFoundError,
        troupe.AccessDeniedError,
        troupe.InboxFull,
        troupe.ProtocolError,
        troupe.AuthError,
    ):
        assert issubclass(cls, troupe.NetworkError)
    assert issubclass(troupe.MailboxFull, troupe.TroupeError)
    import trio

    assert issubclass(troupe.MailboxFull, trio.WouldBlock)
    assert issubclass(troupe.IncompatibleStore, troupe.StoreError)


#: Bases of the tree: never raised themselves, so their docstrings say what they group.
BASE_ERRORS = {"TroupeError", "NetworkError"}
#: Exported errors whose docstrings are still to say "Raised when ..." (defined in
#: troupe/hub, which is changed separately; drop the name from here when it does).
PENDING_DOCSTRINGS = {"troupe.hub.InjectedCrash"}


def exported_errors() -> dict[str, type[BaseException]]:
    """Every error class a public module exports, by where it is first exported."""
    found: dict[type[BaseException], str] = {}
    for name in public_modules():
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                found.setdefault(obj, f"{name}.{attr}")
    return {
        where: cls
        for cls, where in found.items()
        if cls.__name__ not in BASE_ERRORS and where not in PENDING_DOCSTRINGS
    }


@pytest.mark.parametrize("where", sorted(exported_errors()))
def test_each_error_says_when_it_is_raised(where: str) -> None:
    doc = exported_errors()[where].__doc__ or ""
    assert doc.startswith("Raised when "), f"{where}: {doc.splitlines()[0] if doc else doc!r}"


def test_the_client_exports_identity_and_disconnected() -> None:
    from troupe.client import AgentClient, Disconnected, HumanClient, Identity

    assert issubclass(AgentClient, Identity)
    assert issubclass(HumanClient, Identity)
    assert issubclass(Disconnected, RuntimeError)
