"""The contract every cache backend meets, and the argument checks they share.

A backend is a class (or any callable) ``factory(path, options) -> MemoryMappedCache``,
registered under the entry-point group ``mmstream.backends``. Backends import only this
module and :mod:`mmstream.errors`; they never see the manager or the server.

Semantics every backend keeps (the conformance suite in :mod:`mmstream.testing` checks them):

- ``size`` is the allocated size of the file; ``data_end`` is how far bytes were written
  (the high-water mark of writes, or the file's size after ``open()`` of an existing file).
- ``write`` past ``size`` grows the file (geometrically, reserving disk blocks first, so a full
  disk is a :class:`~mmstream.errors.NoSpaceError`, never a crash).
- ``read`` never returns bytes past ``data_end``: it returns fewer bytes when the range runs
  past it (like ``pread``), ``b""`` at exactly ``data_end``, and raises
  :class:`~mmstream.errors.OutOfRangeError` for an offset beyond it.
- Every method but ``close``/``is_open``/``size``/``data_end`` raises
  :class:`~mmstream.errors.CacheClosedError` on a closed cache; ``close`` is idempotent.
- Implementations are safe to call from several threads: the manager runs long calls
  (fsync, fallocate, big copies) in worker threads while short reads happen on the event loop.
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import attrs
from typing_extensions import Buffer

from .errors import (
    BatchLimitError,
    CacheClosedError,
    InvalidArgumentError,
    NoSpaceError,
    OutOfRangeError,
    StorageError,
)

__all__ = [
    "CREATE_FLAGS",
    "DEFAULT_BATCH_LIMIT",
    "DEFAULT_INITIAL_SIZE",
    "DEFAULT_SEGMENT_SIZE",
    "MAX_FILE_SIZE",
    "OPEN_FLAGS",
    "Buffer",
    "CacheFactory",
    "CacheOptions",
    "FileDescriptorCache",
    "GiB",
    "KiB",
    "MemoryMappedCache",
    "MiB",
    "check_batch",
    "check_read",
    "check_size",
    "check_write",
    "fsync_directory",
    "grown_size",
    "os_errors",
    "reserve_blocks",
]

log = logging.getLogger("mmstream.cache")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_INITIAL_SIZE = 64 * MiB
DEFAULT_SEGMENT_SIZE = 1 * GiB
DEFAULT_BATCH_LIMIT = 1000
#: Largest file any backend accepts: offsets must fit a signed 64-bit off_t.
MAX_FILE_SIZE = 2**63 - 1


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"'{attribute.name}' must be positive, got {value}")


MmapWrite = Literal["pwrite", "mapping"]


@attrs.frozen
class CacheOptions:
    """Tuning knobs a backend receives from the ``[cache]`` section of the config."""

    #: The mmap backend's mapping window (``[cache.mmap].segment_size``), and every
    #: backend's largest growth step: read by :func:`grown_size`.
    segment_size: int = attrs.field(default=DEFAULT_SEGMENT_SIZE, validator=_positive)
    batch_limit: int = attrs.field(default=DEFAULT_BATCH_LIMIT, validator=_positive)
    #: Grow at least this much at a time (geometric growth doubles up to one segment):
    #: read by :func:`grown_size`, so by every backend and the manager's quota claim. Not a
    #: config key: it only matters while a file is smaller than it; tests set it small.
    min_growth: int = attrs.field(default=1 * MiB, validator=_positive)
    #: Pre-fault pages ahead of the writer (mmap backend, ``mmap_write = "mapping"``),
    #: trading a syscall for page faults.
    prefault: bool = True
    #: How the mmap backend writes: ``pwrite`` into the page cache the mapping shares (the
    #: default: no page faults; see docs/backends.md) or ``mapping``, a copy into the mapped
    #: pages. Reads go through the mapping either way.
    mmap_write: MmapWrite = attrs.field(
        default="pwrite", validator=attrs.validators.in_(("pwrite", "mapping"))
    )


@runtime_checkable
class MemoryMappedCache(Protocol):
    """One stream's bytes on disk. Failures raise; they are never a ``False`` return."""

    @property
    def path(self) -> Path: ...

    @property
    def is_open(self) -> bool: ...

    @property
    def size(self) -> int:
        """Allocated bytes of the file (reserved, not necessarily written)."""
        ...

    @property
    def data_end(self) -> int:
        """Bytes readable: the high-water mark of writes since create/open."""
        ...

    def create(self, initial_size: int) -> None:
        """Create a new file (never an existing one) with ``initial_size`` bytes reserved."""
        ...

    def open(self) -> None:
        """Open an existing file; ``data_end`` becomes the file's size."""
        ...

    def close(self) -> None: ...

    def write(self, offset: int, data: Buffer) -> int:
        """Write ``data`` at ``offset``, growing the file if needed; return bytes written."""
        ...

    def read(self, offset: int, length: int) -> bytes: ...

    def resize(self, new_size: int) -> None:
        """Grow (or shrink, never below ``data_end``) the allocation to ``new_size``."""
        ...

    def flush(self) -> None:
        """Make written bytes durable (msync/fsync). A failure raises StorageError."""
        ...

    def finalize(self, final_size: int) -> None:
        """Flush, truncate the file to ``final_size`` and fsync file and directory."""
        ...

    def write_batch(self, ops: Sequence[tuple[int, Buffer]]) -> int:
        """Apply ``(offset, data)`` writes in order; at most ``batch_limit``. Returns total."""
        ...

    def read_batch(self, ops: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read ``(offset, length)`` ranges; at most ``batch_limit``."""
        ...

    def prefetch(self, offset: int, length: int) -> None:
        """Hint that the range will be read soon (MADV_WILLNEED); a no-op where unsupported."""
        ...

    def evict(self, offset: int, length: int) -> None:
        """Hint that the range is not needed in memory (MADV_DONTNEED); data stays on disk."""
        ...


class CacheFactory(Protocol):
    """What an entry point of ``mmstream.backends`` loads: usually the backend class."""

    def __call__(self, path: Path, options: CacheOptions) -> MemoryMappedCache: ...


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer, got {type(value).__name__}")
    return value


def check_size(name: str, value: object) -> int:
    """A file size: an int in ``0..MAX_FILE_SIZE``."""
    size = _check_int(name, value)
    if size < 0:
        raise InvalidArgumentError(f"{name} must not be negative, got {size}")
    if size > MAX_FILE_SIZE:
        raise OutOfRangeError(f"{name} {size} exceeds the largest file size {MAX_FILE_SIZE}")
    return size


def check_write(offset: object, length: int) -> int:
    """Validate a write of ``length`` bytes at ``offset``; return the end offset."""
    start = check_size("offset", offset)
    if start + length > MAX_FILE_SIZE:
        raise OutOfRangeError(f"write of {length} bytes at {start} exceeds the largest file size")
    return start + length


def check_read(offset: object, length: object, data_end: int) -> tuple[int, int]:
    """Validate a read against ``data_end``; return ``(start, stop)`` clamped to it."""
    start = check_size("offset", offset)
    count = check_size("length", length)
    if start > data_end:
        raise OutOfRangeError(f"offset {start} is past the end of the data ({data_end})")
    return start, min(start + count, data_end)


def check_batch(ops: Sequence[object], limit: int) -> None:
    if len(ops) > limit:
        raise BatchLimitError(f"a batch holds at most {limit} operations, got {len(ops)}")


def grown_size(current: int, needed: int, options: CacheOptions) -> int:
    """Geometric growth: double, at least ``min_growth``, at most one segment per step,
    and never less than ``needed``."""
    step = min(max(current, options.min_growth), options.segment_size)
    return max(needed, current + step)


# -- file-system helpers shared by backends -------------------------------------------------


@contextmanager
def os_errors(what: str, path: Path) -> Iterator[None]:
    """Turn an ``OSError`` from the block into :class:`StorageError` (``NoSpaceError`` for
    ENOSPC/EDQUOT), saying what was being done to which file: the whole path for the log,
    only the file's name for clients (``public_message``). A full disk is logged here, with
    the path, since the callers pass it on to clients as expected rather than log it."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        cls = NoSpaceError if exc.errno in (_errno.ENOSPC, _errno.EDQUOT) else StorageError
        reason = exc.strerror or str(exc)
        detail = f"{what} {path}: {reason}"
        if cls is NoSpaceError:
            log.warning("no space: %s", detail)
        raise cls(detail, errno=exc.errno, public=f"{what} {path.name}: {reason}") from exc


def reserve_blocks(fd: int, offset: int, length: int, path: Path) -> None:
    """Allocate disk blocks for ``[offset, offset+length)`` and extend the file to cover it.

    Reserving before the range is mapped turns a full disk into ``NoSpaceError`` here instead
    of a SIGBUS on first touch. File systems without fallocate fall back to ftruncate.
    """
    if length <= 0:
        return
    with os_errors("reserving space in", path):
        try:
            os.posix_fallocate(fd, offset, length)
        except OSError as exc:
            if exc.errno not in (_errno.EOPNOTSUPP, _errno.EINVAL, _errno.ENOSYS):
                raise
            if os.fstat(fd).st_size < offset + length:
                os.ftruncate(fd, offset + length)


def fsync_directory(path: Path) -> None:
    """fsync the directory holding ``path`` so a create, rename or truncate survives power loss."""
    with os_errors("syncing directory of", path):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: A stream file is always a new file (never an existing one) and never reached through a link.
CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


class FileDescriptorCache:
    """The bookkeeping every backend on one file descriptor shares: the path and options,
    the ``size`` and ``data_end`` the contract exposes, and the closed check. Subclasses do
    the I/O; ``_lock`` guards size changes and close against worker threads."""

    def __init__(self, path: Path | str, options: CacheOptions | None = None) -> None:
        self._path = Path(path)
        self._options = options or CacheOptions()
        self._fd: int | None = None
        self._size = 0
        self._data_end = 0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<{type(self).__name__} {str(self._path)!r} {state} size={self._size}>"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def size(self) -> int:
        return self._size

    @property
    def data_end(self) -> int:
        return self._data_end

    def _require_fd(self) -> int:
        fd = self._fd
        if fd is None:
            raise CacheClosedError(f"cache {self._path} is closed")
        return fd

    def resize(self, new_size: int) -> None:
        """Grow or shrink the allocation; never below ``data_end``."""
        size = check_size("new_size", new_size)
        with self._lock:
            fd = self._require_fd()
            if size < self._data_end:
                raise InvalidArgumentError(
                    f"cannot shrink {self._path} to {size}: {self._data_end} bytes are written"
                )
            if size > self._size:
                self._grow_locked(fd, size)
            elif size < self._size:
                self._shrink_locked(fd, size)

    def _grow_locked(self, fd: int, new_size: int) -> None:
        """Reserve ``[size, new_size)`` and set ``_size``; called with ``_lock`` held."""
        raise NotImplementedError

    def _shrink_locked(self, fd: int, new_size: int) -> None:
        """Release ``[new_size, size)`` and set ``_size``; called with ``_lock`` held."""
        raise NotImplementedError
