"""What the manager tells an object-storage tier (docs/tiering.md), and nothing more: the
manager calls these hooks and never imports the tier, which stays optional."""

from __future__ import annotations

from typing import Protocol

from ._context import StreamInfo

__all__ = ["StreamTier"]


class StreamTier(Protocol):
    """Called on the event loop; each call only records the work and returns at once."""

    def stream_ready(self, info: StreamInfo) -> None:
        """``info`` is READY (just finalized, or found READY when the tier was attached) and
        not known to be tiered: copy it to the bucket."""
        ...

    def stream_deleted(self, info: StreamInfo) -> None:
        """``info`` was deleted (not evicted): delete its copy too."""
        ...
