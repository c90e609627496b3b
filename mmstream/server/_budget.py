"""How many received bytes the server holds for its clients: per connection and in all.

A client can make the server hold what it sent and the server has not applied yet: whole
messages in the connection's queue and the start of a frame still arriving. A client that
stops reading its replies (so the session waits on the socket and applies nothing) and keeps
sending used to hold a queue of full-size messages, ~75 MiB per connection. So every
connection has an :class:`Account` in one server-wide :class:`ByteBudget`:

- a connection never holds more than ``per_connection`` bytes;
- up to ``guaranteed`` bytes it may always hold, so every connection can make progress with
  ordinary frames whatever the others do;
- beyond that only while all connections together hold less than ``limit``.

When a connection may not hold more, the server stops reading its socket (TCP slows the
client); it reads again when the session takes messages (its own bytes are released) or,
for a connection waiting on the shared part, when others release theirs, in the order they
began to wait.

Pure bookkeeping, no I/O: the socket reader asks :meth:`Account.allowance` before a read
and parks with a wake-up callback while it is 0; the queues charge and release.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

__all__ = ["GUARANTEED", "Account", "ByteBudget", "client_frame_size", "payload_size"]

#: Bytes every connection may hold whatever the others hold: two of the client's default
#: 256 KiB upload frames, so an ordinary upload is never stalled by the budget.
GUARANTEED = 512 * 1024


def _nothing() -> None:
    pass


def client_frame_size(size: int) -> int:
    """The bytes a client's whole frame of ``size`` payload bytes takes on the wire: its
    header (2, 4 or 10 bytes) and the 4-byte mask a client must send."""
    if size < 126:
        return size + 6
    if size < 1 << 16:
        return size + 8
    return size + 14


def payload_size(message: str | bytes) -> int:
    """The bytes ``message`` took as a frame's payload (text is UTF-8)."""
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode())


class ByteBudget:
    """The server-wide receive budget: every WebSocket's :class:`Account` draws on it (see the
    module docstring for the three bounds)."""

    def __init__(self, limit: int, per_connection: int, guaranteed: int = GUARANTEED) -> None:
        if min(limit, per_connection, guaranteed) < 1:
            raise ValueError("byte budgets must be at least 1")
        self.limit = limit
        self.per_connection = per_connection
        self.guaranteed = min(guaranteed, per_connection)
        #: Bytes every open account holds together.
        self.held = 0
        #: Accounts waiting for room, in the order they began to wait, with their wake-ups.
        self._waiting: dict[Account, Callable[[], None]] = {}

    def open_account(self) -> Account:
        return Account(self)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def park(self, account: Account, wake: Callable[[], None]) -> None:
        self._waiting[account] = wake

    def unpark(self, account: Account) -> Callable[[], None]:
        """Forget ``account``'s wait; its wake-up (a no-op if it was not waiting)."""
        return self._waiting.pop(account, _nothing)

    def wake_waiting(self) -> None:
        """Wake every waiting account that now has room (they read in turn)."""
        if not self._waiting:
            return
        for account in [a for a in self._waiting if a.allowance()]:
            self._waiting.pop(account)()


@attrs.define(eq=False)
class Account:
    """One connection's share of a :class:`ByteBudget`."""

    budget: ByteBudget
    held: int = 0
    closed: bool = False

    def allowance(self) -> int:
        """Bytes this connection may receive now (0: stop reading until woken)."""
        if self.closed:
            return 0
        budget = self.budget
        own = budget.per_connection - self.held
        shared = max(budget.guaranteed - self.held, budget.limit - budget.held)
        return max(0, min(own, shared))

    def charge(self, size: int) -> None:
        """``size`` more bytes are held (queued, or part of a frame still arriving)."""
        if self.closed or not size:
            return
        self.held += size
        self.budget.held += size

    def release(self, size: int) -> None:
        """``size`` bytes charged earlier are no longer held (applied, or joined into a
        message charged anew)."""
        if self.closed or not size:
            return
        size = min(size, self.held)
        self.held -= size
        self.budget.held -= size
        self.budget.wake_waiting()

    def wait_for_room(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (once) when :meth:`allowance` may have become positive; at once if
        it is already."""
        if self.allowance() or self.closed:
            wake()
        else:
            self.budget.park(self, wake)

    def stop_waiting(self) -> None:
        self.budget.unpark(self)

    def close(self) -> None:
        """The connection ended: everything it held is released; idempotent."""
        if self.closed:
            return
        held, self.held = self.held, 0
        self.closed = True
        wake = self.budget.unpark(self)
        self.budget.held -= held
        self.budget.wake_waiting()
        wake()
