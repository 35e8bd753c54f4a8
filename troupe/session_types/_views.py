"""View policies: how one participant sees a session's WAL (reference §2.10).

Rules every view keeps:

- Only envelopes ``visible_to`` the participant and that ``render`` turns into text are shown,
  in WAL order.
- The participant's own envelopes become ``assistant`` items, everyone else's ``user`` items.
- Windowed views keep the last ``recent_n`` items verbatim and, when there were more, open with
  one ``system`` item: "Earlier in this session: N message(s) from a, b." (speakers sorted).
- Named views prefix every line not sent by the participant with ``[<name>]: `` and list names
  (not ids) in the summary.
- ``recent_n`` below 1 is refused with ``ValueError`` when the view is built.

A view is folded one envelope at a time (:class:`ViewFold`): it holds only what it shows, the
last ``window`` lines (every line for a transcript view) and, for the lines before the window,
their count and senders. ``project`` folds a whole WAL; a turn handler keeps a fold per session
and folds each envelope once, as it arrives, so a turn's cost does not grow with the session.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import ClassVar

import attrs

from ..model import Envelope
from ._base import HistoryItem, NameFor, Render, ViewPolicy

#: A frozen view: called with ``name_for`` (names are looked up when the history is read), it
#: gives the history items as they were when it was taken.
HistoryBuilder = Callable[[NameFor], list[HistoryItem]]


def _at_least_one(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"recent_n must be at least 1, got {value}")


class ViewFold:
    """One participant's view of one session, folded one envelope at a time.

    Holds at most ``window`` lines (all of them when ``window`` is None) plus, for the lines
    pushed out of the window, their number and their senders (in first-seen order). Folding
    is O(1); :meth:`freeze` is O(window) (O(1) for a transcript view, whose lines are only
    ever appended).
    """

    __slots__ = ("_earlier", "_lines", "_speakers", "named", "participant_id", "render", "window")

    def __init__(
        self, *, participant_id: str, render: Render, window: int | None, named: bool
    ) -> None:
        self.participant_id = participant_id
        self.render = render
        self.window = window
        self.named = named
        self._lines: deque[HistoryItem] | list[HistoryItem] = (
            deque(maxlen=window) if window is not None else []
        )
        self._earlier = 0
        #: Senders of the lines before the window, in first-seen order (a dict as an
        #: ordered set: a frozen view reads the prefix it saw).
        self._speakers: dict[str, None] = {}

    def __len__(self) -> int:
        """How many lines are held (at most ``window``)."""
        return len(self._lines)

    @property
    def earlier(self) -> int:
        """How many lines were pushed out of the window."""
        return self._earlier

    def fold(self, envelope: Envelope) -> None:
        """Take in the session's next envelope (in WAL order)."""
        me = self.participant_id
        if not envelope.visible_to(me):
            return
        text = self.render(envelope)
        if text is None:
            return
        lines = self._lines
        if self.window is not None and len(lines) == self.window:
            self._earlier += 1
            self._speakers.setdefault(lines[0].sender_id)
        sender = envelope.sender_id
        lines.append(
            HistoryItem(
                role="assistant" if sender == me else "user",
                content=text,
                sender_id=sender,
                envelope_id=envelope.envelope_id,
            )
        )

    def senders(self) -> set[str]:
        """Every sender the view may name (bounded by the window and the participants)."""
        found = {line.sender_id for line in self._lines}
        found.update(self._speakers)
        return found

    def freeze(self) -> HistoryBuilder:
        """The view as it is now, to be built into history items later (or never)."""
        lines = self._lines
        # A window is copied (it changes in place); a transcript is only ever appended to,
        # so its first ``n`` lines stay what they are now.
        held: Sequence[HistoryItem] = tuple(lines) if isinstance(lines, deque) else lines
        n = len(held)
        earlier = self._earlier
        speakers, n_speakers = self._speakers, len(self._speakers)
        named, me = self.named, self.participant_id

        def build(name_for: NameFor) -> list[HistoryItem]:
            items: list[HistoryItem] = []
            if earlier:
                who = islice(speakers, n_speakers)
                labels = sorted(name_for(s) for s in who) if named else sorted(who)
                items.append(
                    HistoryItem(
                        role="system",
                        content=(
                            f"Earlier in this session: {earlier} message(s) from "
                            f"{', '.join(labels)}."
                        ),
                    )
                )
            if not named:
                items.extend(islice(held, n))
                return items
            for line in islice(held, n):
                if line.sender_id != me:
                    line = attrs.evolve(
                        line, content=f"[{name_for(line.sender_id)}]: {line.content}"
                    )
                items.append(line)
            return items

        return build


class PolicyFold:
    """The fold of a view policy that cannot fold itself (it has no ``start``).

    Keeps the envelopes visible to the participant, only the last ``window`` of them when the
    policy declares an int ``window``, and calls the policy's ``project`` on them when the
    history is read.
    """

    __slots__ = ("_envelopes", "participant_id", "policy", "render")

    def __init__(self, policy: ViewPolicy, *, participant_id: str, render: Render) -> None:
        self.policy = policy
        self.participant_id = participant_id
        self.render = render
        window = getattr(policy, "window", None)
        self._envelopes: deque[Envelope] = deque(
            maxlen=window if isinstance(window, int) and window > 0 else None
        )

    def __len__(self) -> int:
        return len(self._envelopes)

    def fold(self, envelope: Envelope) -> None:
        if envelope.visible_to(self.participant_id):
            self._envelopes.append(envelope)

    def senders(self) -> set[str]:
        return {envelope.sender_id for envelope in self._envelopes}

    def freeze(self) -> HistoryBuilder:
        envelopes = tuple(self._envelopes)
        policy, me, render = self.policy, self.participant_id, self.render

        def build(name_for: NameFor) -> list[HistoryItem]:
            return policy.project(envelopes, participant_id=me, render=render, name_for=name_for)

        return build


def start_view(policy: ViewPolicy, participant_id: str, render: Render) -> ViewFold | PolicyFold:
    """An empty fold of ``policy`` for ``participant_id``: its own (``policy.start``) when it
    has one, else a :class:`PolicyFold`."""
    start = getattr(policy, "start", None)
    if start is not None:
        fold: ViewFold | PolicyFold = start(participant_id, render)
        return fold
    return PolicyFold(policy, participant_id=participant_id, render=render)


class _Projection:
    """The one projection the four views share; subclasses pick a window and naming."""

    _named: ClassVar[bool] = False

    @property
    def window(self) -> int | None:
        """How many recent lines the view shows verbatim (``None``: all of them)."""
        return None

    def start(self, participant_id: str, render: Render) -> ViewFold:
        """An empty fold of this view for ``participant_id`` (fold the WAL into it)."""
        return ViewFold(
            participant_id=participant_id, render=render, window=self.window, named=self._named
        )

    def project(
        self,
        wal: Sequence[Envelope],
        *,
        participant_id: str,
        render: Render,
        name_for: NameFor,
    ) -> list[HistoryItem]:
        """Project ``wal`` into ``participant_id``'s history.

        Args:
            wal: The session's envelopes in WAL order.
            participant_id: Whose view.
            render: The session type's ``render``.
            name_for: Turns an agent id into a display name.

        Returns:
            The history items, oldest first.
        """
        view = self.start(participant_id, render)
        for envelope in wal:
            view.fold(envelope)
        return view.freeze()(name_for)


@attrs.frozen
class FullTranscript(_Projection):
    """Every visible rendered envelope, verbatim."""

    @property
    def name(self) -> str:
        return "full_transcript"


@attrs.frozen
class WindowedSummary(_Projection):
    """The last ``recent_n`` visible rendered envelopes, after a one-line summary of the rest."""

    recent_n: int = attrs.field(validator=_at_least_one)

    @property
    def name(self) -> str:
        return "windowed_summary"

    @property
    def window(self) -> int | None:
        return self.recent_n


@attrs.frozen
class NamedTranscript(_Projection):
    """Like ``FullTranscript``, with other speakers' lines prefixed ``[<name>]: ``."""

    _named: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "named_transcript"


@attrs.frozen
class NamedWindowedSummary(_Projection):
    """Like ``WindowedSummary``, with name prefixes and names in the summary."""

    _named: ClassVar[bool] = True
    recent_n: int = attrs.field(validator=_at_least_one)

    @property
    def name(self) -> str:
        return "named_windowed_summary"

    @property
    def window(self) -> int | None:
        return self.recent_n
