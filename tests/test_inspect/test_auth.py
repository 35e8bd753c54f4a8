"""The operator key: a bearer token for scripts, a login form and a cookie for browsers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from starlette.applications import Starlette

from tests.harness import open_hub_pair
from troupe.inspect import HubSource, StoreSource, inspector_app
from troupe.inspect._app import COOKIE
from troupe.store import MemoryStore, Store

from ._asgi import client, open_feed

KEY = "s3cret-operator-key"


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as opened:
        yield opened


def app(store: Store) -> Starlette:
    return inspector_app(StoreSource(store), key=KEY)


async def test_without_the_key_pages_ask_for_it_and_the_api_refuses(store: Store) -> None:
    async with client(app(store)) as http:
        page = await http.get("/agents")
        assert page.status_code == 401
        assert 'name="key"' in page.text
        assert 'value="/agents"' in page.text  # back there after the login
        api = await http.get("/api/sessions")
        assert api.status_code == 401
        assert "operator key" in api.json()["error"]
        wrong = await http.get("/api/sessions", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        # The static files hold no data: the login page needs its stylesheet.
        assert (await http.get("/static/inspector.css")).status_code == 200


async def test_a_bearer_key_opens_the_api(store: Store) -> None:
    async with client(app(store), headers={"Authorization": f"Bearer {KEY}"}) as http:
        assert (await http.get("/api/sessions")).json() == {"live": False, "sessions": []}
        assert (await http.get("/")).status_code == 200


async def test_logging_in_sets_a_cookie_that_opens_pages_and_api(store: Store) -> None:
    async with client(app(store)) as http:
        refused = await http.post("/login", data={"key": "guess", "next": "/audit"})
        assert refused.status_code == 401
        assert "not the operator key" in refused.text
        assert COOKIE not in refused.cookies
        login = await http.post("/login", data={"key": KEY, "next": "/audit"})
        assert login.status_code == 303
        assert login.headers["location"] == "/audit"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert KEY not in cookie  # an HMAC of it, not the key
        assert (await http.get("/audit")).status_code == 200
        assert (await http.get("/api/audit")).status_code == 200
        out = await http.get("/logout")
        assert out.status_code == 303
        assert (await http.get("/api/audit")).status_code == 401


@pytest.mark.parametrize("target", ["//elsewhere.example/", "https://elsewhere.example/", "x"])
async def test_a_login_sends_the_browser_to_this_site_only(store: Store, target: str) -> None:
    async with client(app(store)) as http:
        login = await http.post("/login", data={"key": KEY, "next": target})
    assert login.headers["location"] == "/"


async def test_a_cookie_from_another_process_does_not_open_it(store: Store) -> None:
    async with client(app(store)) as first:
        await first.post("/login", data={"key": KEY})
        cookie = first.cookies[COOKIE]
    async with client(app(store)) as second:  # a new secret: as after a restart
        second.cookies.set(COOKIE, cookie)
        assert (await second.get("/api/agents")).status_code == 401


async def test_the_feed_asks_for_the_key(autojump_clock: trio.testing.MockClock) -> None:
    async with open_hub_pair() as h:
        keyed = inspector_app(HubSource(h.hub), key=KEY)
        async with open_feed(keyed) as feed:
            assert await feed.start() == 401
        async with open_feed(keyed, headers=[("Authorization", f"Bearer {KEY}")]) as feed:
            assert await feed.start() == 200


async def test_without_a_key_there_is_no_login(store: Store) -> None:
    async with client(inspector_app(StoreSource(store))) as http:
        assert (await http.get("/api/agents")).status_code == 200
        assert (await http.get("/login")).headers["location"] == "/"


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="operator key must not be empty"):
        inspector_app(StoreSource(MemoryStore()), key="")
