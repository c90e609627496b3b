"""Taking a Trio lock on the hot paths.

``await lock.acquire()`` always passes through the scheduler, free lock or not; on a path
taken once per upload batch, per read reply or per send, that pass costs more than the work
it guards. The callers here checkpoint elsewhere in their loop (a wait for the next message,
a send), so skipping it when the lock is free keeps Trio's fairness.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["acquire", "holding"]


async def acquire(lock: trio.Lock) -> None:
    """Acquire ``lock``; a checkpoint only when it must wait."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


@asynccontextmanager
async def holding(lock: trio.Lock) -> AsyncIterator[None]:
    """``async with lock``, through :func:`acquire`."""
    await acquire(lock)
    try:
        yield
    finally:
        lock.release()
