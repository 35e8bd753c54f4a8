"""The reliability suite runs every hub test on both engines (MemoryStore and SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from troupe.store import Store
from troupe.testing import make_store


@pytest.fixture(params=["memory", "sqlite"])
def troupe_hub_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Overrides the plugin's: every test here runs on both engines."""
    return make_store(request.param, tmp_path)
