"""The ``mmap`` cache backend: the stream file mapped into memory in fixed-size segments.

Writes and reads are slice copies into the mapping, so the hot path is one ``memcpy`` with
no system call. Segments (``CacheOptions.segment_size``, 1 GiB by default) keep every single
mapping small enough for any address space and let files grow past 2 GiB without ever
remapping what is already mapped. See :class:`MmapCache` for the details.
"""

from __future__ import annotations

from ._cache import MmapCache as MmapCache

__all__ = ["MmapCache"]
