"""Judging what the hub answers the state machine: every post, and every WAL after a step.

- A post the hub accepted must be one the oracle (``_oracle.py``) accepts after the WAL
  before its seq: that is what the hub validated it against.
- A post the hub refused with a ``ProtocolError`` must be one the oracle refuses after
  some WAL between the machine's reads before and after it (timers may post notices
  meanwhile). Any other refusal, and a refusal for a crash, must be *excused*: the machine
  injected a fault since the last heal or restart (it is ``disturbed``) and the error is a
  store error or a crash's ``ProtocolError``.
- A first post is never answered as a repeat; a retry may be, only of a post whose first
  answer could not say whether it was appended.
- After every step, each session's WAL holds every accepted nonce exactly once with the id
  and seq its poster got, and no refused one; and a session whose rules say it is over
  (``_oracle.must_be_over``) ends with its close notice once no fault is armed.
"""

from __future__ import annotations

import attrs
import trio

from troupe import Envelope, ProtocolError, TroupeError
from troupe.hub import Accepted, Hub

from ._moves import nonce_of
from ._oracle import ENDINGS, Plan, must_be_over, verdict

#: Virtual seconds one post or create may take before it counts as hung.
POST_DEADLINE = 30.0


@attrs.frozen
class Refused:
    """A post the hub refused: it must not be in the WAL."""

    error: TroupeError


@attrs.frozen
class Unknown:
    """A post whose session crashed and whose WAL could not be read: the WAL decides."""

    error: TroupeError


Outcome = Accepted | Refused | Unknown


@attrs.define
class SessionModel:
    """What the machine knows of one session it opened."""

    plan: Plan
    #: The participants' names, the creator first.
    members: list[str]
    #: nonce -> (envelope_id, seq) the poster was given.
    accepted: dict[int, tuple[str, int]] = attrs.field(factory=dict)
    rejected: set[int] = attrs.field(factory=set)
    #: Posts made with an idempotency key, to retry later: (envelope, nonce).
    keyed: list[tuple[Envelope, int]] = attrs.field(factory=list)
    #: The WAL ended with a close notice when last read.
    over: bool = False
    #: The machine's last post that the session accepted (for the "again" move).
    last: Envelope | None = None

    @property
    def kind(self) -> str:
        return self.plan.metadata.manifest_type


def excused(error: TroupeError, *, disturbed: bool) -> bool:
    """Whether an injected fault explains ``error``: a store error, or a crash's refusal.

    Args:
        error: What the hub raised.
        disturbed: Whether a fault was armed since the last heal or restart.

    Returns:
        True when the error is no finding.
    """
    crash = isinstance(error, ProtocolError) and "crash" in str(error)
    return disturbed and (crash or not isinstance(error, ProtocolError))


def excuse(error: TroupeError, what: str, *, disturbed: bool) -> None:
    """Fail unless an injected fault explains ``error`` (see :func:`excused`).

    Raises:
        AssertionError: Naming ``what`` failed and how.
    """
    if not excused(error, disturbed=disturbed):
        raise AssertionError(f"{what} failed with no fault to explain it: {error!r}") from error


async def post(hub: Hub, envelope: Envelope) -> Outcome:
    """Post ``envelope``; its answer, or the error it was refused with.

    Raises:
        AssertionError: When the post hung for ``POST_DEADLINE`` seconds.
    """
    try:
        with trio.fail_after(POST_DEADLINE):
            return await hub.post(envelope)
    except TroupeError as exc:
        return Unknown(exc) if "is unknown" in str(exc) else Refused(exc)
    except trio.TooSlowError:
        raise AssertionError(f"a post hung for {POST_DEADLINE}s: {envelope}") from None


def judge(
    model: SessionModel,
    envelope: Envelope,
    result: Outcome,
    before: list[Envelope],
    after: list[Envelope],
    *,
    disturbed: bool,
    retry: bool = False,
) -> None:
    """Check the hub's answer to a post and note it in ``model`` (see the module docstring).

    Args:
        model: The session.
        envelope: The post.
        result: The hub's answer.
        before: The WAL read before the post.
        after: The WAL read after it.
        disturbed: Whether a fault was armed since the last heal or restart.
        retry: Whether ``envelope`` was posted before.

    Raises:
        AssertionError: Naming the post and what was wrong with the answer.
    """
    nonce = nonce_of(envelope)
    assert nonce is not None
    model.over = bool(after) and after[-1].event_type in ENDINGS
    if isinstance(result, Accepted):
        why = verdict(model.plan, after[: result.seq - 1], envelope)
        assert why is None, f"the hub accepted {envelope} at seq {result.seq}, but {why}"
        if result.duplicate:  # of a post whose first answer did not say
            assert retry, f"a first post was answered as a repeat: {envelope}"
            assert nonce not in model.rejected, f"a refused post was answered as a repeat: #{nonce}"
        model.rejected.discard(nonce)
        model.accepted[nonce] = (result.envelope_id, result.seq)
        model.last = envelope
        return
    if isinstance(result, Refused) and not retry:
        model.rejected.add(nonce)
    if excused(result.error, disturbed=disturbed):
        return
    assert isinstance(result.error, ProtocolError), (
        f"{envelope} was refused with {result.error!r} while no fault was armed"
    )
    reasons = [verdict(model.plan, after[:n], envelope) for n in range(len(before), len(after) + 1)]
    assert any(reasons), f"the hub refused {envelope}, which it must accept: {result.error!r}"


def check_wal(sid: str, model: SessionModel, wal: list[Envelope], *, disturbed: bool) -> None:
    """Check a session's WAL against what its posters were told, and its closing.

    Raises:
        AssertionError: Naming the nonce or the session that is wrong.
    """
    model.over = bool(wal) and wal[-1].event_type in ENDINGS
    if not disturbed and must_be_over(model.plan, wal):
        assert model.over, f"{model.kind} {sid} should have closed: {wal[-1]}"
    found: dict[int, list[Envelope]] = {}
    for envelope in wal:
        nonce = nonce_of(envelope)
        if nonce is not None:
            found.setdefault(nonce, []).append(envelope)
    for nonce, (envelope_id, seq) in model.accepted.items():
        copies = found.get(nonce, [])
        assert len(copies) == 1, f"accepted #{nonce} is {len(copies)} times in {sid}"
        assert (copies[0].envelope_id, copies[0].seq) == (envelope_id, seq)
    for nonce in model.rejected:
        assert nonce not in found, f"refused #{nonce} is in the WAL of {sid}"
