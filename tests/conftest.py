"""Test-suite wide settings: every async test runs under a hang cap.

A test that deadlocks would otherwise wait forever (trio does not detect deadlocks). Each
async test body runs inside ``trio.fail_after(cap)`` on the test's own clock. Under the
``autojump_clock`` fixture a deadlock jumps straight to the cap and fails at once, so that cap
is far beyond any virtual time a test may legitimately spend (expectations wait for hours);
tests on the real clock get a cap in real seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Generator, Iterator
from inspect import iscoroutinefunction
from typing import Any

import pytest
import trio
import trio.testing

from tests._postgres import fresh_schemas, postgres_dsn

#: Virtual seconds (under a MockClock) before a test counts as hung: thirty days.
VIRTUAL_HANG_CAP_S = 30 * 86400.0
#: Real seconds before a test on the real clock counts as hung.
REAL_HANG_CAP_S = 120.0

AsyncTest = Callable[..., Coroutine[Any, Any, Any]]


def _capped(test: AsyncTest) -> AsyncTest:
    @functools.wraps(test)
    async def capped(*args: Any, **kwargs: Any) -> Any:
        virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        with trio.fail_after(VIRTUAL_HANG_CAP_S if virtual else REAL_HANG_CAP_S):
            return await test(*args, **kwargs)

    return capped


# tryfirst: wrap the test before pytest-trio turns it into a trio.run call.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if isinstance(item, pytest.Function):
        hypothesis = getattr(item.obj, "hypothesis", None)
        if hypothesis is not None and iscoroutinefunction(hypothesis.inner_test):
            hypothesis.inner_test = _capped(hypothesis.inner_test)
        elif iscoroutinefunction(item.obj):
            item.obj = _capped(item.obj)
    yield


@pytest.fixture
def pg_dsn() -> str:
    """The test PostgreSQL's DSN (``TROUPE_TEST_POSTGRES``); skipped without one, not in CI."""
    return postgres_dsn()


@pytest.fixture
def pg_schemas(pg_dsn: str) -> Iterator[list[str]]:
    """Schemas this test made on the test PostgreSQL (``tests._postgres.new_schema``);
    dropped after the test."""
    yield from fresh_schemas(pg_dsn)
