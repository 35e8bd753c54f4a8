"""The layers of troupe, checked from the source: who may import whom.

Imports are read with ``ast`` from every module of the package, counting those under
``if TYPE_CHECKING:`` and inside functions: an import that only a type checker or a late
call makes is still a dependency of the design.

- No import cycles among troupe's modules (the test prints the cycle it finds).
- ``client/``, ``transport/`` and ``api/`` never import ``hub/`` or ``store/``: a client that
  only talks WebSocket loads neither the hub nor the store (nor sqlite3).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

import troupe

PACKAGE = Path(troupe.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    found: dict[str, tuple[Path, bool]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The troupe modules ``name`` imports (a submodule when one is named, else the package)."""
    path, is_package = MODULES[name]
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in MODULES else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A shortest cycle through the first module that is on one, or None."""
    for start in sorted(graph):
        came_from: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while (prev := came_from[path[-1]]) is not None:
                        path.append(prev)
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    queue.append(nxt)
    return None


def test_the_import_graph_is_read() -> None:
    # The check below would pass on an empty graph: make sure it sees real edges.
    assert "troupe.hub._hub" in MODULES
    assert "troupe.api" in GRAPH["troupe.hub._hub"]
    assert "troupe.model" in GRAPH["troupe.api._requests"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    cycle = _find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


@pytest.mark.parametrize("layer", ["troupe.client", "troupe.transport", "troupe.api"])
def test_the_client_side_never_imports_the_hub_or_the_store(layer: str) -> None:
    for name in sorted(MODULES):
        if name == layer or name.startswith(layer + "."):
            bad = sorted(
                m for m in GRAPH[name] if m.startswith(("troupe.hub", "troupe.store", "troupe.sim"))
            )
            assert not bad, f"{name} imports {bad}"


def test_import_troupe_client_loads_neither_the_hub_nor_sqlite3() -> None:
    code = (
        "import sys, troupe.client\n"
        "loaded = sorted(m for m in sys.modules if m == 'sqlite3' or m.startswith("
        "('troupe.hub', 'troupe.store')))\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""


def test_the_hub_is_still_one_attribute_away() -> None:
    code = "import troupe\nfrom troupe import open_hub, MemoryStore\nprint(open_hub.__module__)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "troupe.hub._open"
