"""The ``file`` cache backend: ``os.pread``/``os.pwrite`` on one file descriptor.

The fallback for platforms or file systems where mmap is unusable (some network and FUSE
file systems, 32-bit address spaces). It keeps the whole :class:`MemoryMappedCache` contract.
"""

from __future__ import annotations

from ._cache import FileCache as FileCache

__all__ = ["FileCache"]
