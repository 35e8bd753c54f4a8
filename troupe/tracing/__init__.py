"""Optional OpenTelemetry tracing (``pip install 'trio-troupe[otel]'``).

``troupe.tracing.enable()`` turns it on for the process (hub and clients alike); until
then nothing imports OpenTelemetry and each traced place costs one attribute read. Spans:

- ``troupe.post <event type>`` (PRODUCER): a client's post; its W3C ``traceparent`` travels
  in the envelope's ``trace_id`` (set when the caller left it empty) and is stored with it;
- ``troupe.hub.post <event type>`` (CONSUMER): the hub's post path (admission, append,
  dispatch), a child of the poster's span (a root, whose context the hub writes into
  ``trace_id``, when the envelope came without one);
- ``troupe.turn`` (CONSUMER): an agent's turn (``respond`` and posting its reply), a child
  of the trigger's ``trace_id``;
- ``troupe.rpc <op>`` (CLIENT, then SERVER at the hub): a call over a network, the hub's side
  a child of the caller's (``RequestFrame.traceparent``);
- ``troupe.session <type>``: a session's life in the hub process, from its creation to its
  end (sessions still open when the hub stops end with ``troupe.session.open_at_shutdown``).
"""

from ._switch import disable as disable
from ._switch import enable as enable
from ._switch import enabled as enabled

__all__ = ("disable", "enable", "enabled")
