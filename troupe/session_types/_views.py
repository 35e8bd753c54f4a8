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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import attrs

from ..model import Envelope
from ._base import HistoryItem, NameFor, Render


def _at_least_one(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"recent_n must be at least 1, got {value}")


class _Projection:
    """The one projection the four views share; subclasses pick a window and naming."""

    _named: ClassVar[bool] = False

    def _window(self) -> int | None:
        return None

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
        shown: list[tuple[Envelope, str]] = []
        for envelope in wal:
            if envelope.visible_to(participant_id):
                text = render(envelope)
                if text is not None:
                    shown.append((envelope, text))
        items: list[HistoryItem] = []
        window = self._window()
        if window is not None and len(shown) > window:
            earlier, shown = shown[:-window], shown[-window:]
            items.append(self._summary(earlier, name_for))
        for envelope, text in shown:
            own = envelope.sender_id == participant_id
            if self._named and not own:
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

    def _summary(self, earlier: list[tuple[Envelope, str]], name_for: NameFor) -> HistoryItem:
        speakers = {envelope.sender_id for envelope, _ in earlier}
        labels = sorted(name_for(s) for s in speakers) if self._named else sorted(speakers)
        return HistoryItem(
            role="system",
            content=(
                f"Earlier in this session: {len(earlier)} message(s) from {', '.join(labels)}."
            ),
        )


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

    def _window(self) -> int | None:
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

    def _window(self) -> int | None:
        return self.recent_n
