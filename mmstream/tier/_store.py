"""The contract an object store meets for the tier, as :class:`~mmstream.cache.MemoryMappedCache`
is the contract of a local backend.

The calls block: the tier runs them in worker threads (like the manager's fsyncs), so the
event loop never waits on the network. Failures raise; a missing object is
:class:`ObjectNotFoundError`, anything the bucket or the network did is
:class:`~mmstream.errors.StorageError` (the world broke it, the tier retries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from ..cache import Buffer
from ..errors import StreamNotFoundError

__all__ = ["MAX_PARTS", "ObjectNotFoundError", "ObjectStore", "part_size_for"]

#: S3 accepts at most this many parts in one multipart upload.
MAX_PARTS = 10_000
_MiB = 1024 * 1024


class ObjectNotFoundError(StreamNotFoundError):
    """The bucket has no object under that key."""


@runtime_checkable
class ObjectStore(Protocol):
    """Objects under string keys in one bucket (and prefix), written whole or not at all."""

    def put(
        self, key: str, chunks: Iterable[Buffer], *, size: int, attributes: Mapping[str, str]
    ) -> None:
        """Store ``chunks`` (``size`` bytes in all) under ``key``, replacing any object there.

        Atomic: a large object goes up as a multipart upload whose completion is the commit,
        so a crash or an exception raised by ``chunks`` leaves no object (or the old one)
        visible, never a part of the new one. ``attributes`` become the object's
        user metadata (ASCII values)."""
        ...

    def get(self, key: str) -> bytes:
        """The whole object (manifests: small)."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end of the object)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none."""
        ...

    def check(self) -> None:
        """Reach the bucket once (a start-up probe): raise if it cannot be reached."""
        ...


def part_size_for(size: int, part_size: int) -> int:
    """The multipart part size for an object of ``size`` bytes: ``part_size``, raised (to
    whole MiB) when the object would otherwise need more than :data:`MAX_PARTS` parts."""
    needed = -(-size // MAX_PARTS)
    return max(part_size, -(-needed // _MiB) * _MiB)
