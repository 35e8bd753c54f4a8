"""Bounded mailboxes: overflow policies, a system lane, selective receive, dead letters."""

from .._errors import MailboxClosed as MailboxClosed
from .._errors import MailboxFull as MailboxFull
from ._mailbox import DeadLetter as DeadLetter
from ._mailbox import DeadLetterBuffer as DeadLetterBuffer
from ._mailbox import DeadLetterSink as DeadLetterSink
from ._mailbox import Mailbox as Mailbox
from ._mailbox import MailboxStatistics as MailboxStatistics
from ._queue import NOTHING as NOTHING
from ._queue import MailQueue as MailQueue
from ._queue import Overflow as Overflow

__all__ = (
    "NOTHING",
    "DeadLetter",
    "DeadLetterBuffer",
    "DeadLetterSink",
    "MailQueue",
    "Mailbox",
    "MailboxClosed",
    "MailboxFull",
    "MailboxStatistics",
    "Overflow",
)
