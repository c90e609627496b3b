"""What the manager tells an object-storage tier (docs/tiering.md), and nothing more: the
manager calls these hooks and never imports the tier, which stays optional."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..cache import Buffer
from ._context import StreamInfo

#: Where a restore writes the bytes it fetches: ``write(offset, data)``, from a worker thread.
Writer = Callable[[int, Buffer], object]

__all__ = ["StreamTier", "Writer"]


class StreamTier(Protocol):
    """Called on the event loop; each call only records the work and returns at once."""

    def stream_ready(self, info: StreamInfo) -> None:
        """``info`` is READY (just finalized, or found READY when the tier was attached) and
        not known to be tiered: copy it to the bucket."""
        ...

    def stream_deleted(self, info: StreamInfo) -> None:
        """``info`` was deleted (not evicted): delete its copy too."""
        ...

    async def lookup(self, stream_id: str) -> StreamInfo | None:
        """The READY stream the bucket holds under ``stream_id`` (a local miss), or None."""
        ...

    async def read(self, info: StreamInfo, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of a remote stream (clamped by the caller)."""
        ...

    def stream_hot(self, info: StreamInfo) -> None:
        """A remote stream is being read again: bring it back (``StreamManager.restore``)."""
        ...

    async def fetch(self, info: StreamInfo, write: Writer) -> None:
        """Write every byte of ``info``'s copy through ``write`` (in a worker thread), and
        raise unless they match its size and sha256."""
        ...
