"""The expectation sweeper: evaluates every live session's expectations and runs handlers.

Rules:

- One tick (``hub.check_expectations()``, or the sweeper child every
  ``expectation_sweep_interval`` seconds) evaluates each expectation of each live session
  on the hub clock (``_evaluators``), from the published metadata, state and activity.
- A violation fires once per violator and episode: the dedup key is (session, expectation
  index, violator, the seq the violator's clock started at). A new silence, a new missed
  turn or a new unanswered message is a new episode. Keys are persisted (store namespace
  ``EXPECT_NS``) after the handler succeeded, so nothing fires twice across a hub restart;
  they are dropped once the session is over.
- Handlers: ``audit`` records it; ``warn`` / ``notify_session`` post an
  ``EV_EXPECTATION_VIOLATED`` notice from the creator to every participant; ``hide`` and
  ``remove`` post the same notice, which turn-taking session types fold (``_stalls``: the
  floor passes on / the violator leaves the rotation); ``auto_close`` closes the session
  with ``expectation_violated:<name>`` and ends its evaluation for the tick. Every firing
  is audited (``expectation_violated``).
- Notices carry an idempotency key derived from the dedup keys (prefixed ``troupe:``, which
  only the hub may use), so a notice re-posted after a crash between the post and the dedup
  write is not appended twice.
- A handler that fails (the post refused, the store down) is logged and not marked: the
  next tick tries again. An unknown evaluator or handler, or a bad ``seconds`` param, is
  logged and audited once per hub run (``expectation_unsupported``), never silently inert.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Final, Generic, Protocol, TypeVar

import trio

from .._errors import NetworkError, StoreError
from ..model import EV_EXPECTATION_VIOLATED, Envelope, Expectation, SessionMetadata, SessionState
from ._core import HubCore
from ._directory import SessionEntry
from ._evaluators import DEFAULT_SECONDS, EVALUATORS, Evaluator, Late, Seen, evaluate, threshold
from ._events import ExpectationViolation
from ._session import HUB_KEYS
from ._session_parts import HubPost
from ._sessions import SessionSupervisor

log = logging.getLogger("troupe.hub")

#: Store namespace of fired dedup keys: ``{key: session_id}``.
EXPECT_NS: Final = "troupe.expectations"
#: The handlers, by ``Expectation.on_violation``.
HANDLERS: Final = frozenset({"audit", "warn", "notify_session", "auto_close", "hide", "remove"})


class SweptHub(Protocol):
    """What the sweeper uses of its hub (``troupe.hub.Hub``; not imported: it holds this)."""

    @property
    def core(self) -> HubCore: ...

    @property
    def _sessions(self) -> SessionSupervisor: ...

    async def close_session(self, session_id: str, *, reason: str = "") -> SessionMetadata: ...


H = TypeVar("H", bound=SweptHub)
H_contra = TypeVar("H_contra", contravariant=True)


class Handler(Protocol[H_contra]):
    """A registered violation handler: ``await handler(hub, violation)``."""

    def __call__(self, hub: H_contra, violation: ExpectationViolation, /) -> Awaitable[object]: ...


def _detail(expectation: Expectation, seen: Seen, late: list[Late]) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if expectation.name in DEFAULT_SECONDS or "seconds" in expectation.params:
        with contextlib.suppress(ValueError):  # a registered evaluator's own business
            detail["threshold_seconds"] = threshold(expectation)
    detail["elapsed_seconds"] = round(max(seen.now - x.since.at for x in late), 3)
    return detail


def _key(session_id: str, index: int, expectation: Expectation, late: Late) -> str:
    return f"{session_id}|{index}|{expectation.name}|{late.agent_id}|{late.since.seq}"


class ExpectationSweeper(Generic[H]):
    """The state of a hub's expectation checks: which violations already fired."""

    def __init__(self, hub: H) -> None:
        self._hub = hub
        self._lock = trio.Lock()  # a tick from the sweeper and one called directly never overlap
        self._fired: set[str] | None = None  # loaded from the store on the first tick
        self._by_session: dict[str, set[str]] = {}
        self._unsupported: set[tuple[str, int]] = set()
        #: name -> (evaluator, the state it runs in): the built-ins and registered ones.
        self.evaluators: dict[str, tuple[Evaluator, SessionState]] = dict(EVALUATORS)
        #: name -> a registered handler, or None for a built-in one (run by name below).
        self.handlers: dict[str, Handler[H] | None] = dict.fromkeys(HANDLERS)

    async def check(self) -> list[ExpectationViolation]:
        """Run one tick over every session (see the module docstring).

        Returns:
            The violations that fired in this tick, in session order.
        """
        async with self._lock:
            core = self._hub.core
            if self._fired is None:
                await self._load()
            fired: list[ExpectationViolation] = []
            for entry in list(core.directory.sessions.values()):
                if entry.metadata.state.terminal:
                    await self._forget(entry.session_id)
                elif entry.metadata.expectations:
                    try:
                        fired += await self._check_session(entry)
                    except (NetworkError, StoreError) as exc:
                        # One session that cannot be loaded or acted on must not stop the
                        # sweep for the others (nor crash the sweeper, tick after tick).
                        log.warning(
                            "expectations: session %s skipped this tick: %s",
                            entry.session_id,
                            exc,
                        )
            return fired

    async def _load(self) -> None:
        store = self._hub.core.store
        directory = self._hub.core.directory.sessions
        self._fired = set()
        for key, sid in (await store.load_kv(EXPECT_NS)).items():
            entry = directory.get(sid) if isinstance(sid, str) else None
            if entry is None or entry.metadata.state.terminal:
                await store.delete_kv(EXPECT_NS, key)
                continue
            self._fired.add(key)
            self._by_session.setdefault(sid, set()).add(key)

    async def _forget(self, session_id: str) -> None:
        keys = self._by_session.pop(session_id, None)
        if not keys:
            return
        assert self._fired is not None
        self._fired -= keys
        for key in sorted(keys):
            await self._hub.core.store.delete_kv(EXPECT_NS, key)

    async def _check_session(self, entry: SessionEntry) -> list[ExpectationViolation]:
        hub = self._hub
        if entry.activity is None:
            await hub._sessions.running(entry)  # not loaded in this hub run yet: recover it first
        activity = entry.activity
        md = entry.metadata
        if activity is None or md.state.terminal:
            return []
        turn = None
        if entry.stype is not None and entry.state is not None:
            turn = entry.stype.expected_next(md, entry.state)
        seen = Seen(md, turn, activity, hub.core.now())
        fired = []
        for index, expectation in enumerate(md.expectations):
            if (
                expectation.name not in self.evaluators
                or expectation.on_violation not in self.handlers
            ):
                self._unsupported_once(md, index, "unknown evaluator or handler")
                continue
            try:
                late = evaluate(expectation, seen, self.evaluators)
            except ValueError as exc:
                self._unsupported_once(md, index, str(exc))
                continue
            except Exception as exc:
                # A registered evaluator's bug: logged and audited once, never the sweeper's end.
                self._unsupported_once(md, index, f"the evaluator raised {exc!r}")
                continue
            assert self._fired is not None
            new = [x for x in late if _key(md.session_id, index, expectation, x) not in self._fired]
            if not new:
                continue
            violation = ExpectationViolation(
                session_id=md.session_id,
                expectation=expectation.name,
                on_violation=expectation.on_violation,
                violators=tuple(x.agent_id for x in new if x.agent_id),
                detail=_detail(expectation, seen, new),
            )
            keys = [_key(md.session_id, index, expectation, x) for x in new]
            if not await self._run_handler(md, expectation, violation, keys):
                continue
            await self._mark(md.session_id, keys)
            hub.core.audit(
                "expectation_violated",
                session_id=md.session_id,
                expectation=expectation.name,
                on_violation=expectation.on_violation,
                violators=list(violation.violators),
                detail=violation.detail,
            )
            fired.append(violation)
            if expectation.on_violation == "auto_close":
                break
        return fired

    async def _run_handler(
        self,
        md: SessionMetadata,
        expectation: Expectation,
        violation: ExpectationViolation,
        keys: list[str],
    ) -> bool:
        handler = expectation.on_violation
        custom = self.handlers.get(handler)
        try:
            if custom is not None:
                await custom(self._hub, violation)
            elif handler == "auto_close":
                await self._hub.close_session(
                    md.session_id, reason=f"expectation_violated:{expectation.name}"
                )
            elif handler != "audit":
                await self._post_notice(md, violation, keys)
        except (NetworkError, StoreError) as exc:
            log.warning(
                "expectation %s (%s) in session %s: handler failed, retrying next tick: %s",
                expectation.name,
                handler,
                md.session_id,
                exc,
            )
            return False
        except Exception as exc:
            if custom is None:
                raise
            log.exception(
                "expectation %s in session %s: handler %r raised, retrying next tick",
                expectation.name,
                md.session_id,
                handler,
                exc_info=exc,
            )
            return False
        return True

    async def _post_notice(
        self, md: SessionMetadata, violation: ExpectationViolation, keys: list[str]
    ) -> None:
        notice = Envelope(
            session_id=md.session_id,
            sender_id=md.creator_id,
            event_type=EV_EXPECTATION_VIOLATED,
            event_data={
                "expectation": violation.expectation,
                "on_violation": violation.on_violation,
                "violators": list(violation.violators),
                "detail": violation.detail,
            },
            audience=tuple(md.participant_ids()),
            idempotency_key=HUB_KEYS + "expectation:" + ",".join(keys),
        )
        await self._hub._sessions.ask(md.session_id, HubPost(notice))

    async def _mark(self, session_id: str, keys: list[str]) -> None:
        assert self._fired is not None
        for key in keys:
            await self._hub.core.store.put_kv(EXPECT_NS, key, session_id)
            self._fired.add(key)
            self._by_session.setdefault(session_id, set()).add(key)

    def _unsupported_once(self, md: SessionMetadata, index: int, why: str) -> None:
        if (md.session_id, index) in self._unsupported:
            return
        self._unsupported.add((md.session_id, index))
        expectation = md.expectations[index]
        log.warning(
            "session %s: expectation %s -> %s is not supported (%s); it never fires",
            md.session_id,
            expectation.name,
            expectation.on_violation,
            why,
        )
        self._hub.core.audit(
            "expectation_unsupported",
            session_id=md.session_id,
            expectation=expectation.name,
            on_violation=expectation.on_violation,
            reason=why,
        )
