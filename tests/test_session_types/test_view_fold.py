"""Folded views equal the full re-render they replaced, and hold no more than the window."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_session_types._helpers import metadata
from troupe.model import (
    EV_EXPECTATION_VIOLATED,
    EV_PACKET,
    EV_SESSION_OPENED,
    EV_TEXT,
    Envelope,
)
from troupe.session_types import (
    EV_AUCTION_SELECT,
    AnySessionType,
    FullTranscript,
    HistoryItem,
    NamedTranscript,
    NamedWindowedSummary,
    NameFor,
    Render,
    ViewPolicy,
    WindowedSummary,
    builtin_types,
)
from troupe.session_types._views import PolicyFold, start_view

IDS = ("a", "b", "c", "d")
NAMES = {"a": "Alice", "b": "Bob", "c": "Carol", "d": "Dan"}


def old_project(
    wal: Sequence[Envelope],
    *,
    participant_id: str,
    render: Render,
    name_for: NameFor,
    window: int | None,
    named: bool,
) -> list[HistoryItem]:
    """The full re-render every turn ran before views were folded (the oracle)."""
    shown: list[tuple[Envelope, str]] = []
    for envelope in wal:
        if envelope.visible_to(participant_id):
            text = render(envelope)
            if text is not None:
                shown.append((envelope, text))
    items: list[HistoryItem] = []
    if window is not None and len(shown) > window:
        earlier, shown = shown[:-window], shown[-window:]
        speakers = {envelope.sender_id for envelope, _ in earlier}
        labels = sorted(name_for(s) for s in speakers) if named else sorted(speakers)
        items.append(
            HistoryItem(
                role="system",
                content=(
                    f"Earlier in this session: {len(earlier)} message(s) from {', '.join(labels)}."
                ),
            )
        )
    for envelope, text in shown:
        own = envelope.sender_id == participant_id
        if named and not own:
            text = f"[{name_for(envelope.sender_id)}]: {text}"
        items.append(
            HistoryItem(
                role="assistant" if own else "user",
                content=text,
                sender_id=envelope.sender_id,
                envelope_id=envelope.envelope_id,
            )
        )
    return items


def _named(policy: ViewPolicy) -> bool:
    return isinstance(policy, NamedTranscript | NamedWindowedSummary)


@st.composite
def event(draw: st.DrawFn) -> tuple[str, str, dict[str, object], tuple[str, ...] | None]:
    sender = draw(st.sampled_from(IDS))
    kinds = (EV_TEXT, EV_TEXT, EV_TEXT, EV_PACKET, EV_AUCTION_SELECT, EV_EXPECTATION_VIOLATED)
    kind = draw(st.sampled_from((*kinds, EV_SESSION_OPENED)))
    text = draw(st.sampled_from(["hi", "", "ok", "x y"]))
    data: dict[str, object]
    if kind == EV_PACKET:
        routing = draw(
            st.sampled_from(
                [{"kind": "continue"}, {"kind": "handoff", "target": "b", "reason": "why"}]
            )
        )
        data = {"body": text, "routing": routing}
    elif kind == EV_AUCTION_SELECT:
        data = {"winner_id": draw(st.sampled_from(IDS))}
    elif kind == EV_EXPECTATION_VIOLATED:
        data = {
            "on_violation": draw(st.sampled_from(["hide", "remove", "audit"])),
            "violators": [draw(st.sampled_from(IDS))],
            "expectation": "turn_within",
        }
    else:
        data = {"text": text}
    audience = draw(st.none() | st.lists(st.sampled_from(IDS), max_size=2).map(tuple))
    return sender, kind, data, audience


def _wal(
    events: list[tuple[str, str, dict[str, object], tuple[str, ...] | None]],
) -> list[Envelope]:
    return [
        Envelope(
            session_id="s1",
            sender_id=sender,
            event_type=kind,
            event_data=data,
            audience=audience,
            envelope_id=f"e{seq}",
            seq=seq,
        )
        for seq, (sender, kind, data, audience) in enumerate(events, start=1)
    ]


def _policies(stype: AnySessionType, n: int) -> list[ViewPolicy]:
    return [
        stype.default_view_policy(metadata(stype.name, IDS[: max(2, n)]), "a"),
        FullTranscript(),
        NamedTranscript(),
        WindowedSummary(recent_n=n),
        NamedWindowedSummary(recent_n=n),
    ]


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(event(), max_size=40),
    n=st.integers(min_value=1, max_value=6),
    me=st.sampled_from(IDS),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=4),
)
def test_folded_views_equal_the_full_rerender(
    events: list[tuple[str, str, dict[str, object], tuple[str, ...] | None]],
    n: int,
    me: str,
    cuts: list[int],
) -> None:
    wal = _wal(events)
    for stype in builtin_types():
        for policy in _policies(stype, n):
            window = getattr(policy, "window", None)

            def oracle(
                prefix: Sequence[Envelope],
                policy: ViewPolicy = policy,
                stype: AnySessionType = stype,
            ) -> list[HistoryItem]:
                return old_project(
                    prefix,
                    participant_id=me,
                    render=stype.render,
                    name_for=NAMES.__getitem__,
                    window=getattr(policy, "window", None),
                    named=_named(policy),
                )

            assert policy.project(
                wal, participant_id=me, render=stype.render, name_for=NAMES.__getitem__
            ) == oracle(wal), (stype.name, policy)
            # Folded one envelope at a time, frozen at some points: every frozen view is
            # the re-render of the prefix it saw, even after more was folded.
            view = start_view(policy, me, stype.render)
            frozen = []
            marks = set(cuts)
            for i, envelope in enumerate(wal):
                if i in marks:
                    frozen.append((i, view.freeze()))
                view.fold(envelope)
                if window is not None:
                    assert len(view) <= window
            frozen.append((len(wal), view.freeze()))
            for i, build in frozen:
                assert build(NAMES.__getitem__) == oracle(wal[:i]), (stype.name, policy, i)


class _CustomView:
    """A view policy of a custom session type: no fold of its own, a declared window."""

    name = "custom"
    window = 3

    def project(
        self,
        wal: Sequence[Envelope],
        *,
        participant_id: str,
        render: Render,
        name_for: NameFor,
    ) -> list[HistoryItem]:
        return [HistoryItem(role="user", content=f"{e.seq}") for e in wal]


def test_a_policy_without_a_fold_is_projected_over_its_declared_window() -> None:
    view = start_view(_CustomView(), "a", lambda e: e.text)
    assert isinstance(view, PolicyFold)
    for envelope in _wal([("b", EV_TEXT, {"text": "t"}, None)] * 10):
        view.fold(envelope)
    assert len(view) == 3
    assert [h.content for h in view.freeze()(str)] == ["8", "9", "10"]


def test_a_windowed_fold_holds_the_window_after_ten_thousand_envelopes() -> None:
    policy = WindowedSummary(recent_n=10)
    view = start_view(policy, "a", lambda e: e.text)
    for envelope in _wal(
        [("b" if i % 2 else "a", EV_TEXT, {"text": f"m{i}"}, None) for i in range(10_000)]
    ):
        view.fold(envelope)
    assert len(view) == 10
    items = view.freeze()(str)
    assert len(items) == 11
    assert items[0].content == "Earlier in this session: 9990 message(s) from a, b."
