"""Who gets a connection slot: the global and per-address caps, and what happens at them.

A cap that simply refuses newcomers lets anyone who opens enough idle sockets lock every
other client out (and the load balancer's health checks with them) until the idle timeout.
So a full cap is made room in instead: the connection that has been idle longest (no
request in flight, nothing being streamed; a socket that has not sent its first request yet
counts as idle) is closed to admit the newcomer, overall at the global cap, among the same
address's connections at the per-address cap. Only when every slot does real work is a
newcomer turned away, and even then it is read briefly in one of a few *overflow* slots, so
a health check is answered before the connection closes (the rest get 503). Overflow slots
make room the same way: the oldest is dropped for a newcomer.

Pure bookkeeping, no I/O: the front door and the session say when a connection becomes idle
or busy, and the limiter calls a slot's ``evict`` when it closes one.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import attrs

__all__ = ["OVERFLOW_SLOTS", "ConnectionLimiter", "Slot"]

#: Connections read briefly beyond the cap (to answer a health check, else 503).
OVERFLOW_SLOTS = 64


def _ignore() -> None:
    pass


@attrs.define(eq=False)
class Slot:
    """One admitted connection. ``evict`` is what closes it (the owner may replace it as
    the connection changes hands, e.g. to the WebSocket session)."""

    ip: str
    #: None: a full slot; else why the connection is only answered briefly (overflow).
    refusal: str | None = None
    evict: Callable[[], None] = _ignore
    #: Set once the limiter has let go of the slot (released or evicted).
    released: bool = False
    _limiter: ConnectionLimiter | None = attrs.field(default=None, repr=False)

    def idle(self) -> None:
        """No request in flight and nothing being sent: may be closed to make room (the
        newest idle connection goes last)."""
        if self._limiter is not None:
            self._limiter.mark_idle(self)

    def busy(self) -> None:
        if self._limiter is not None:
            self._limiter.mark_busy(self)


class ConnectionLimiter:
    """The connection caps (``max_connections``, per address): hands out slots, knows which
    connection is idle longest, and picks it to make room for a newcomer; no I/O."""

    def __init__(
        self, max_connections: int, max_per_ip: int, *, overflow: int = OVERFLOW_SLOTS
    ) -> None:
        if min(max_connections, max_per_ip, overflow) < 1:
            raise ValueError("connection caps must be at least 1")
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.overflow = overflow
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._active = 0
        #: Idle full slots, longest idle first (insertion order: re-marking moves to the end).
        self._idle: dict[Slot, None] = {}
        self._idle_per_ip: dict[str, dict[Slot, None]] = {}
        #: Overflow slots, oldest first.
        self._overflowing: dict[Slot, None] = {}
        #: Connections closed to make room, since the start (for logs and tests).
        self.evictions = 0

    @property
    def active(self) -> int:
        """Full slots in use (overflow slots not counted)."""
        return self._active

    def admit(self, ip: str) -> Slot:
        """A slot for a new connection from ``ip``: a full one (it starts idle), made room
        for by evicting the longest-idle connection if a cap is reached, else an overflow
        slot with its ``refusal``."""
        refusal: str | None = None
        if self._per_ip[ip] >= self.max_per_ip:
            victim = next(iter(self._idle_per_ip.get(ip, ())), None)
            if victim is None:
                refusal = "too many connections from this address"
            else:
                self._evict(victim)
        if refusal is None and self._active >= self.max_connections:
            victim = next(iter(self._idle), None)
            if victim is None:
                refusal = "too many connections"
            else:
                self._evict(victim)
        slot = Slot(ip, refusal, limiter=self)
        if refusal is not None:
            if len(self._overflowing) >= self.overflow:
                self._evict(next(iter(self._overflowing)))
            self._overflowing[slot] = None
            return slot
        self._active += 1
        self._per_ip[ip] += 1
        self.mark_idle(slot)
        return slot

    def rebind(self, slot: Slot, ip: str) -> bool:
        """Count ``slot`` for ``ip`` from now on (a trusted proxy named the client behind
        it): made room for as :meth:`admit` does, among that address's idle connections;
        False, and the slot unchanged, when every one of them does real work."""
        if slot.released or slot.refusal is not None or ip == slot.ip:
            return True
        if self._per_ip[ip] >= self.max_per_ip:
            victim = next(iter(self._idle_per_ip.get(ip, ())), None)
            if victim is None:
                return False
            self._evict(victim)
        idle = slot in self._idle
        self.mark_busy(slot)
        self._per_ip[slot.ip] -= 1
        if not self._per_ip[slot.ip]:
            del self._per_ip[slot.ip]
        slot.ip = ip
        self._per_ip[ip] += 1
        if idle:
            self.mark_idle(slot)
        return True

    def release(self, slot: Slot) -> None:
        """The connection closed; idempotent (an evicted slot is already released)."""
        if slot.released:
            return
        slot.released = True
        if slot.refusal is not None:
            del self._overflowing[slot]
            return
        self.mark_busy(slot)
        self._active -= 1
        self._per_ip[slot.ip] -= 1
        if not self._per_ip[slot.ip]:
            del self._per_ip[slot.ip]

    def mark_idle(self, slot: Slot) -> None:
        if slot.released or slot.refusal is not None:
            return
        self._idle.pop(slot, None)
        self._idle[slot] = None
        per_ip = self._idle_per_ip.setdefault(slot.ip, {})
        per_ip.pop(slot, None)
        per_ip[slot] = None

    def mark_busy(self, slot: Slot) -> None:
        if slot in self._idle:
            del self._idle[slot]
            per_ip = self._idle_per_ip[slot.ip]
            del per_ip[slot]
            if not per_ip:
                del self._idle_per_ip[slot.ip]

    def _evict(self, slot: Slot) -> None:
        self.release(slot)
        self.evictions += 1
        slot.evict()
