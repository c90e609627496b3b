"""One clock for every connection's upload acknowledgements while frames keep arriving.

An upload that goes quiet is acknowledged at once (the session does that when its transport
has no frame left on its way); while frames keep arriving, at most ``ack_interval`` after a
byte is written (or every ``ack_bytes``, which the session does itself). A timer per connection costs, for every ack,
a pass through the scheduler, a cancel scope and the exception that ends a timed sleep: with
1,000 real-time streams, 20,000 of each a second, more than everything else the server does
for those streams together (docs/performance.md). On the machines we measure, each timed
wakeup of an otherwise idle loop also costs about 100 µs of CPU in the kernel and hypervisor.

So one :class:`AckClock` per server keeps the sessions that wrote since their last ack and,
once per ``ack_interval``, calls each one's ``acknowledge_due``, which writes its ack frame
to the socket without awaiting (or leaves it to the session's own task when the socket is
busy). A session is due at the tick that follows its first unacknowledged byte: never later
than ``ack_interval`` after it.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["AckClock", "Acknowledger"]


class Acknowledger(Protocol):
    """What the clock calls: a session with bytes written since its last ack."""

    def acknowledge_due(self) -> None:
        """Acknowledge what was written since the last ack, without awaiting."""
        ...


class AckClock:
    """The one timer behind every connection's time-based acks (see the module docstring)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        #: The sessions to acknowledge at the next tick (a dict: an ordered set).
        self._due: dict[Acknowledger, None] = {}
        self._woken = trio.Event()

    def due(self, session: Acknowledger) -> None:
        """``session`` wrote bytes to acknowledge by the next tick."""
        if not self._due:
            self._woken.set()
        self._due[session] = None

    def forget(self, session: Acknowledger) -> None:
        """``session`` is closing: no more ticks for it."""
        self._due.pop(session, None)

    async def run(self) -> None:
        while True:
            if not self._due:
                await self._woken.wait()
                self._woken = trio.Event()
                continue
            await trio.sleep(self.interval)
            due, self._due = self._due, {}
            for session in due:
                session.acknowledge_due()
