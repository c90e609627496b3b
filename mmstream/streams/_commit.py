"""Group commit: requests that arrive while a commit runs share the next one.

A finalize, a client's ``sync``, an append under ``sync_policy = "always"`` and the
background round all need the same thing: some streams' data flushed, then their metadata
made durable. Each caller submits its requests and waits; one of them (the *leader*) runs
the batch of everything submitted so far, in one worker-thread trip and one journal write,
while the others wait; whoever submitted during that commit forms the next batch, led by its
first member (so a leader never serves later arrivals at the expense of its own reply). As
in databases' group commit, N concurrent finalizes cost one metadata commit, not N.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import attrs
import trio

__all__ = ["CommitStatistics", "GroupCommit"]

R = TypeVar("R")


@attrs.frozen
class CommitStatistics:
    """How well group commit batched: requests per commit is what it saves in journal
    writes (read by the tests through ``StreamManager.commit_statistics``, never by the
    commit path)."""

    #: Batches run (each one journal write at most).
    commits: int
    #: Requests carried by those batches.
    requests: int


@attrs.define(eq=False)
class _Waiter(Generic[R]):
    requests: Sequence[R]
    done: trio.Event = attrs.Factory(trio.Event)
    lead: bool = False


class GroupCommit(Generic[R]):
    """Run ``commit(batch)`` for requests submitted together (see the module docstring)."""

    def __init__(self, commit: Callable[[list[R]], Awaitable[None]]) -> None:
        self._commit = commit
        self._waiting: list[_Waiter[R]] = []
        self._busy = False
        self._commits = 0
        self._requests = 0

    def statistics(self) -> CommitStatistics:
        return CommitStatistics(commits=self._commits, requests=self._requests)

    async def submit(self, requests: Sequence[R]) -> None:
        """Return once ``requests`` were committed (each request carries its outcome).
        Not cancellable: a commit under way finishes, and its waiters with it."""
        waiter = _Waiter(requests)
        self._waiting.append(waiter)
        with trio.CancelScope(shield=True):
            if self._busy:
                await waiter.done.wait()
                if not waiter.lead:
                    return
            self._busy = True
            # Requests made ready by the same scheduler pass join this batch.
            await trio.lowlevel.checkpoint()
            batch, self._waiting = self._waiting, []
            try:
                items = [request for member in batch for request in member.requests]
                self._commits += 1
                self._requests += len(items)
                await self._commit(items)
            finally:
                for member in batch:
                    member.done.set()
                if self._waiting:
                    self._waiting[0].lead = True
                    self._waiting[0].done.set()
                else:
                    self._busy = False
