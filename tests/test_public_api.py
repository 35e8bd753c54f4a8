"""The public surface: every package's ``__all__`` is a literal tuple of real names.

(ruff's RUF022 keeps each one sorted.)
"""

from __future__ import annotations

import ast
import importlib
import pickle
import pkgutil
import subprocess
import sys
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


@pytest.mark.parametrize("name", public_modules())
def test_every_explicit_reexport_is_in_all(name: str) -> None:
    # ``from ._x import Y as Y`` marks Y as public for type checkers; __all__ must agree.
    module = importlib.import_module(name)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    reexported = {
        alias.asname
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname is not None and alias.asname == alias.name
    }
    missing = sorted(reexported - set(module.__all__))
    assert not missing, f"{name} re-exports {missing} without listing them in __all__"


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
        troupe.IdentityInUse,
    ):
        assert issubclass(cls, troupe.NetworkError)
    assert issubclass(troupe.MailboxFull, troupe.TroupeError)
    import trio

    assert issubclass(troupe.MailboxFull, trio.WouldBlock)
    assert issubclass(troupe.IncompatibleStore, troupe.StoreError)
    assert issubclass(troupe.StoreLocked, troupe.StoreError)


def test_importing_troupe_does_not_print_its_warnings_to_stderr() -> None:
    # Until the application configures logging, troupe's records go nowhere, as in any
    # library (a NullHandler on the "troupe" logger); they still reach handlers it adds.
    code = (
        "import logging, troupe\n"
        "logging.getLogger('troupe.hub').warning('a crashed session')\n"
        "logging.basicConfig(format='%(message)s')\n"
        "logging.getLogger('troupe.hub').warning('configured')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == "configured\n"


#: Bases of the tree: never raised themselves, so their docstrings say what they group.
BASE_ERRORS = {"TroupeError", "NetworkError"}


def exported_errors() -> dict[str, type[BaseException]]:
    """Every error class a public module exports, by where it is first exported."""
    found: dict[type[BaseException], str] = {}
    for name in public_modules():
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                found.setdefault(obj, f"{name}.{attr}")
    return {where: cls for cls, where in found.items() if cls.__name__ not in BASE_ERRORS}


@pytest.mark.parametrize("where", sorted(exported_errors()))
def test_each_error_says_when_it_is_raised(where: str) -> None:
    doc = exported_errors()[where].__doc__ or ""
    assert doc.startswith("Raised when "), f"{where}: {doc.splitlines()[0] if doc else doc!r}"


def test_the_client_exports_identity_and_disconnected() -> None:
    from troupe.client import AgentClient, Disconnected, HumanClient, Identity

    assert issubclass(AgentClient, Identity)
    assert issubclass(HumanClient, Identity)
    assert issubclass(Disconnected, RuntimeError)


def test_the_hub_exports_its_extension_points() -> None:
    import attrs

    from troupe import hub

    assert troupe.HubListener is hub.HubListener
    for name in (
        "AgentRegistered",
        "AgentUnregistered",
        "Audited",
        "DispatchFailed",
        "EnvelopeAccepted",
        "EnvelopeRejected",
        "ExpectationViolated",
        "Missed",
        "SessionActorCrashed",
        "SessionActorRestarted",
        "SessionClosed",
        "SessionCreated",
        "SessionOpened",
        "TaskChanged",
        "TurnFailed",
        "EventStreamStatistics",
        "Late",
        "Mark",
        "Seen",
    ):
        cls = getattr(hub, name)
        assert attrs.has(cls), name
        assert cls.__setattr__ is not object.__setattr__, f"{name} is not frozen"
    for method in (
        "events",
        "open_events",
        "add_listener",
        "remove_listener",
        "register_expectation_evaluator",
        "register_violation_handler",
        "register_auction_arbiter",
        "register_sweeper",
        "unregister_sweeper",
    ):
        assert callable(getattr(hub.Hub, method)), method


ERRORS = (
    "TroupeError",
    "NetworkError",
    "NotFoundError",
    "AccessDeniedError",
    "RateLimited",
    "InboxFull",
    "ProtocolError",
    "DecodeError",
    "IllegalTransition",
    "WorkflowGraphError",
    "AuthError",
    "ConnectionLost",
    "MailboxFull",
    "MailboxClosed",
    "ActorDead",
    "RestartIntensityExceeded",
    "StoreError",
    "IncompatibleStore",
    "StoreLocked",
    "NameTaken",
    "NotOwner",
    "IdentityInUse",
)


@pytest.mark.parametrize("name", ERRORS)
def test_errors_print_as_troupe_names_and_pickle(name: str) -> None:
    # A traceback shows ``troupe.ProtocolError``, not ``troupe._errors.ProtocolError``.
    cls = getattr(troupe, name)
    assert f"{cls.__module__}.{cls.__qualname__}" == f"troupe.{name}"
    exc = (
        cls("session s-1 said no", record="Envelope", field="x")
        if name == "DecodeError"
        else cls("session s-1 said no", shard=3, owner="n-1", epoch=2)
        if name == "NotOwner"
        else (cls("session s-1 said no"))
    )
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == "session s-1 said no"
    assert repr(back) == f"{name}('session s-1 said no')"


def test_not_owner_keeps_its_fields_through_pickle() -> None:
    back = pickle.loads(pickle.dumps(troupe.NotOwner("no", shard=3, owner="n-1", epoch=2)))
    assert (back.shard, back.owner, back.epoch) == (3, "n-1", 2)
    assert issubclass(troupe.NotOwner, troupe.StoreError)


def test_name_taken_keeps_its_fields_through_pickle() -> None:
    back = pickle.loads(pickle.dumps(troupe.NameTaken("taken", name="ann", holder="a-1")))
    assert (back.name, back.holder) == ("ann", "a-1")
    assert issubclass(troupe.NameTaken, troupe.StoreError)


def test_decode_error_keeps_its_fields_through_pickle() -> None:
    back = pickle.loads(pickle.dumps(troupe.DecodeError("bad", record="Envelope", field="seq")))
    assert (back.record, back.field) == ("Envelope", "seq")


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("troupe.actors", ("ActorDead",)),
        ("troupe.mailbox", ("MailboxFull", "MailboxClosed")),
        ("troupe.supervisors", ("RestartIntensityExceeded",)),
    ],
)
def test_errors_import_where_the_readme_documents_them(module: str, names: tuple[str, ...]) -> None:
    mod = importlib.import_module(module)
    for name in names:
        assert getattr(mod, name) is getattr(troupe, name)
