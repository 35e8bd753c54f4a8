"""The inspector's ASGI app (Starlette): its pages, their JSON under ``/api/``, the live feed.

Rules:

- Read only: every route is GET, but ``POST /login`` (which sets a cookie and touches
  nothing else). The app holds no write path to the hub or the store.
- With an operator ``key``, every page and every ``/api/`` answer needs it: either an
  ``Authorization: Bearer KEY`` header (scripts, curl), or the cookie ``POST /login`` sets
  when given the key (browsers; HttpOnly, SameSite=Strict, for this process only: it is an
  HMAC of the key under a secret made at start). Without it a page answers 401 with the
  login form, ``/api/`` 401 with a JSON error.
- A bad query parameter is a 400 naming it; an unknown session a 404 naming its id.
- Pages are plain HTML with one script (``static/inspector.js``) and no inline code, so the
  Content-Security-Policy allows scripts from this origin only.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, quote

import orjson
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._feed import FEED_CAPACITY, MAX_VIEWERS, Viewers, next_message, open_feed, sse
from ._sources import (
    AUDIT_KEPT,
    SESSIONS_DEFAULT,
    SESSIONS_MAX,
    STATUSES,
    WAL_DEFAULT,
    WAL_MAX,
    SessionFilter,
    Source,
)

#: The cookie ``POST /login`` sets.
COOKIE: Final = "troupe_inspect"
#: The longest ``POST /login`` body read.
LOGIN_BODY_MAX: Final = 4096
#: The pages: path, page name (the script's switch), title.
PAGES: Final = (
    ("/", "sessions", "Sessions"),
    ("/agents", "agents", "Agents"),
    ("/supervision", "supervision", "Supervision"),
    ("/statistics", "statistics", "Statistics"),
    ("/audit", "audit", "Audit log"),
)
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC: Final = {
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
}


class BadRequest(Exception):
    """Raised when a query parameter is malformed (the message names it)."""


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, default=repr),
        status_code=status,
        media_type="application/json",
        headers=_HEADERS,
    )


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be a whole number {low}..{high}")
    return value


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return value if value else None


class _Auth:
    def __init__(self, key: str | None) -> None:
        if key is not None and not key:
            raise ValueError("the operator key must not be empty")
        self.key = key
        self._secret = secrets.token_bytes(32)

    def cookie_for(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def valid_key(self, key: str) -> bool:
        assert self.key is not None
        return hmac.compare_digest(key.encode(), self.key.encode())

    def allows(self, request: Request) -> bool:
        if self.key is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and self.valid_key(token.strip()):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and hmac.compare_digest(cookie, self.cookie_for(self.key))


def _nav(current: str) -> str:
    links = "".join(
        f'<a href="{path}"{" class=here" if name == current else ""}>{title}</a>'
        for path, name, title in PAGES
    )
    return f'<nav><b>troupe</b> inspector {links}<span id="live"></span></nav>'


def _page(name: str, title: str, data: Mapping[str, str] | None = None) -> Response:
    attrs = "".join(
        f' data-{key}="{html.escape(value, quote=True)}"' for key, value in (data or {}).items()
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)} · troupe inspector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/inspector.css">
<script src="/static/inspector.js" defer></script>
</head><body data-page="{name}"{attrs}>
{_nav(name)}
<main><h1 id="title">{html.escape(title)}</h1><div id="content">loading…</div></main>
</body></html>
"""
    return Response(body, media_type="text/html; charset=utf-8", headers=_HEADERS)


def _login_page(next_path: str, error: str = "", status: int = 401) -> Response:
    message = f'<p class="error">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in · troupe inspector</title>
<link rel="stylesheet" href="/static/inspector.css"></head><body>
<main class="login"><h1>troupe inspector</h1>
<p>This hub asks for its operator key.</p>{message}
<form method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(next_path, quote=True)}">
<label>Operator key <input type="password" name="key" autofocus></label>
<button type="submit">Log in</button></form></main></body></html>
"""
    return Response(body, status_code=status, media_type="text/html; charset=utf-8")


def _safe_next(path: str | None) -> str:
    """Where a login may send the browser: a path of this site only."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


Handler = Callable[[Request], Awaitable[Response]]


class _Feed:
    """``GET /api/events``: the live feed, a raw ASGI endpoint (see ``_feed``)."""

    def __init__(self, app: _Inspector) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        request = Request(scope, receive)
        response: Response | None = None
        hub = app.source.hub
        if not app.auth.allows(request):
            response = _json({"error": "an operator key is needed (see /login)"}, 401)
        elif hub is None:
            response = _json({"error": "no live feed: this inspector reads a store at rest"}, 404)
        elif app.viewers.open >= app.viewers.limit:
            response = _json({"error": f"too many viewers (at most {app.viewers.limit})"}, 503)
        if response is not None:
            await response(scope, receive, send)
            return
        assert hub is not None
        session_id = _text(request.query_params, "session")
        app.viewers.open += 1
        try:
            async with open_feed(hub, session_id, app.feed_capacity) as stream:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-store"),
                            (b"x-accel-buffering", b"no"),
                        ],
                    }
                )
                hello = sse("hello", {"session": session_id, "capacity": app.feed_capacity})
                await send({"type": "http.response.body", "body": hello, "more_body": True})
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                    while True:
                        message = await next_message(stream, session_id)
                        if message is None:
                            break
                        await send(
                            {"type": "http.response.body", "body": message, "more_body": True}
                        )
                    await send({"type": "http.response.body", "body": sse("end", {})})
                    nursery.cancel_scope.cancel()
        finally:
            app.viewers.open -= 1


async def _no_icon(request: Request) -> Response:
    await trio.lowlevel.checkpoint()
    return Response(status_code=204)


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


class _Inspector:
    def __init__(
        self, source: Source, key: str | None, feed_capacity: int, max_viewers: int
    ) -> None:
        if feed_capacity < 1:
            raise ValueError(f"feed_capacity must be >= 1, got {feed_capacity!r}")
        self.source = source
        self.auth = _Auth(key)
        self.feed_capacity = feed_capacity
        self.viewers = Viewers(max_viewers)

    def guard(self, handler: Handler, *, page: bool) -> Handler:
        async def guarded(request: Request) -> Response:
            if not self.auth.allows(request):
                if page:
                    return _login_page(request.url.path)
                return _json({"error": "an operator key is needed (see /login)"}, 401)
            try:
                return await handler(request)
            except BadRequest as exc:
                return _json({"error": str(exc)}, 400)

        return guarded

    # -- pages ---------------------------------------------------------------------------

    def page(self, name: str, title: str) -> Handler:
        async def show(request: Request) -> Response:
            await trio.lowlevel.checkpoint()
            return _page(name, title, {"live": "1" if self.source.live else "0"})

        return show

    async def session_page(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if await self.source.session(session_id) is None:
            return Response(f"no session {session_id!r}", status_code=404, media_type="text/plain")
        return _page(
            "session",
            f"Session {session_id}",
            {"session": session_id, "live": "1" if self.source.live else "0"},
        )

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media = _STATIC.get(name)
        if media is None:
            return Response("not found", status_code=404, media_type="text/plain")
        await trio.lowlevel.checkpoint()
        text = resources.files(__package__).joinpath("static", name).read_bytes()
        return Response(text, media_type=media, headers=_HEADERS)

    async def login_form(self, request: Request) -> Response:
        await trio.lowlevel.checkpoint()
        if self.auth.key is None:
            return RedirectResponse("/", status_code=303)
        return _login_page(_safe_next(request.query_params.get("next")), status=200)

    async def login(self, request: Request) -> Response:
        if self.auth.key is None:
            return RedirectResponse("/", status_code=303)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > LOGIN_BODY_MAX:
                return Response("login form too large", status_code=413, media_type="text/plain")
        form = parse_qs(body.decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0]
        next_path = _safe_next((form.get("next") or ["/"])[0])
        if not key or not self.auth.valid_key(key):
            return _login_page(next_path, "That is not the operator key.")
        response = RedirectResponse(quote(next_path, safe="/?=&"), status_code=303)
        response.set_cookie(
            COOKIE, self.auth.cookie_for(key), httponly=True, samesite="strict", path="/"
        )
        return response

    async def logout(self, request: Request) -> Response:
        await trio.lowlevel.checkpoint()
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- JSON ----------------------------------------------------------------------------

    async def api_info(self, request: Request) -> Response:
        await trio.lowlevel.checkpoint()
        return _json({"live": self.source.live, "feed_capacity": self.feed_capacity})

    async def api_agents(self, request: Request) -> Response:
        return _json({"agents": await self.source.agents()})

    async def api_sessions(self, request: Request) -> Response:
        params = request.query_params
        status = _text(params, "status")
        if status is not None and status not in STATUSES:
            raise BadRequest(f"query parameter 'status' must be one of {', '.join(STATUSES)}")
        wanted = SessionFilter(
            status=status,
            type=_text(params, "type"),
            participant=_text(params, "participant"),
            text=_text(params, "q"),
            limit=_int(params, "limit", SESSIONS_DEFAULT, 1, SESSIONS_MAX),
        )
        return _json({"live": self.source.live, "sessions": await self.source.sessions(wanted)})

    async def api_session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        found = await self.source.session(session_id)
        if found is None:
            return _json({"error": f"no session {session_id!r}"}, 404)
        return _json(found)

    async def api_wal(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        params = request.query_params
        since = _int(params, "since", 0, 0, 2**62)
        limit = _int(params, "limit", WAL_DEFAULT, 1, WAL_MAX)
        found = await self.source.session(session_id)
        if found is None:
            return _json({"error": f"no session {session_id!r}"}, 404)
        envelopes = await self.source.wal(session_id, since, limit + 1)
        return _json(
            {
                "session": found,
                "envelopes": envelopes[:limit],
                "more": len(envelopes) > limit,
            }
        )

    async def api_supervision(self, request: Request) -> Response:
        return _json(await self.source.supervision())

    async def api_statistics(self, request: Request) -> Response:
        return _json(await self.source.statistics())

    async def api_audit(self, request: Request) -> Response:
        limit = _int(request.query_params, "limit", 100, 1, AUDIT_KEPT)
        return _json({"records": await self.source.audit(limit)})

    def routes(self) -> list[Route]:
        routes = [
            Route(path, self.guard(self.page(name, title), page=True))
            for path, name, title in PAGES
        ]
        api = {
            "/api/info": self.api_info,
            "/api/agents": self.api_agents,
            "/api/sessions": self.api_sessions,
            "/api/sessions/{session_id}": self.api_session,
            "/api/sessions/{session_id}/wal": self.api_wal,
            "/api/supervision": self.api_supervision,
            "/api/statistics": self.api_statistics,
            "/api/audit": self.api_audit,
        }
        routes += [Route(path, self.guard(handler, page=False)) for path, handler in api.items()]
        routes += [
            Route("/api/events", _Feed(self)),
            Route("/sessions/{session_id}", self.guard(self.session_page, page=True)),
            Route("/static/{name}", self.static),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout),
            Route("/favicon.ico", _no_icon),
        ]
        return routes


def inspector_app(
    source: Source,
    *,
    key: str | None = None,
    feed_capacity: int = FEED_CAPACITY,
    max_viewers: int = MAX_VIEWERS,
) -> Starlette:
    """The inspector as an ASGI app, showing ``source`` (a ``HubSource`` or ``StoreSource``).

    Args:
      source: where the data comes from; a ``HubSource`` must also be running
        (``source.run``) for statistics over time.
      key: the operator key every page and API answer then asks for (``None``: none).
      feed_capacity: events one viewer's live feed holds unread before dropping the newest.
      max_viewers: live feeds served at once.

    Raises:
      ValueError: an empty ``key``, or a limit below 1.
    """
    inspector = _Inspector(source, key, feed_capacity, max_viewers)
    return Starlette(routes=inspector.routes())
