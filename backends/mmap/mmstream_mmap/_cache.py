from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from mmstream.cache import (
    CREATE_FLAGS,
    MAX_FILE_SIZE,
    OPEN_FLAGS,
    Buffer,
    CacheOptions,
    FileDescriptorCache,
    MiB,
    check_batch,
    check_read,
    check_size,
    check_write,
    fsync_directory,
    grown_size,
    os_errors,
    reserve_blocks,
)
from mmstream.errors import InvalidArgumentError, StorageError

_PAGE = mmap.PAGESIZE
_HAS_MADVISE = hasattr(mmap.mmap, "madvise")
# Linux 5.14+ names it; Python 3.11's mmap module does not. Older kernels answer EINVAL.
_MADV_POPULATE_WRITE: int | None = getattr(
    mmap, "MADV_POPULATE_WRITE", 23 if sys.platform == "linux" else None
)
_MADV_WILLNEED: int | None = getattr(mmap, "MADV_WILLNEED", None)
_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)
#: Pages are pre-faulted this far ahead of the writer, refilled once half of it is used:
#: one madvise per ~2 MiB written instead of 512 first-touch page faults.
PREFAULT_AHEAD = 4 * MiB
#: All open caches of a process together pre-fault at most this much ahead of their writers:
#: with many streams open each one's window shrinks (down to ``PREFAULT_MIN``), so 1,000
#: streams do not pin 4 GB of page cache that nobody has written yet.
PREFAULT_BUDGET = 256 * MiB
PREFAULT_MIN = 256 * 1024
_NEVER = 2**64  # a prefault trigger no write end reaches
#: Buffers one pwritev may take (POSIX guarantees 16; Linux allows 1024).
_IOV_MAX = max(16, min(1024, os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16))
_fdatasync = getattr(os, "fdatasync", os.fsync)
#: The fast path's segment while there is none; its limit (-1) keeps every write off it.
_NO_SEGMENT = mmap.mmap(-1, _PAGE)


#: Bytes one ``pwrite``/``pwritev`` writes at most. Linux gives a write page-cache folios as
#: large as it is (ext4: up to 2 MiB) and cuts a folio from the smallest free block that
#: fits it. On a virtual machine whose free memory the host takes back (a balloon's free
#: page reporting, as on this project's machines: free blocks of 128 KiB and up), large
#: folios are mostly memory the host must fault in again on first touch, while 16 KiB ones
#: are cut first from the smaller free blocks the guest kept, memory already there: the
#: page-cache write is the largest cost of an ingest beside a server that discards
#: (docs/performance.md has the measurements). Elsewhere it costs a few more system calls
#: per 64 KiB frame.
PWRITE_BYTES = 16 * 1024


def _pwritev_all(fd: int, views: list[memoryview], offset: int) -> None:
    """Write ``views`` one after the other from ``offset``, whatever short writes happen."""
    written = os.pwritev(fd, views, offset)
    total = sum(view.nbytes for view in views)
    if written < total:
        rest = memoryview(b"".join(views))[written:]
        while rest:
            count = os.pwrite(fd, rest, offset + written)
            rest, written = rest[count:], written + count


def _pwrite_pieces(fd: int, view: memoryview, offset: int) -> None:
    """Write ``view`` from ``offset`` in calls of at most :data:`PWRITE_BYTES` that end on
    its multiples in the file (so each fills whole folios of that size), whatever short
    writes happen."""
    done, size = 0, view.nbytes
    while done < size:
        position = offset + done
        count = min(size - done, PWRITE_BYTES - position % PWRITE_BYTES)
        done += os.pwrite(fd, view[done : done + count], position)


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    """libc's madvise through ctypes, which releases the GIL for the call (``mmap.madvise``
    does not: populating 2 MiB would stall every other thread, the event loop included)."""
    if not _HAS_MADVISE or _MADV_POPULATE_WRITE is None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_madvise = _libc_madvise()
_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_open_caches = 0  # caches of this process that pre-fault, for the per-cache window


def _prefault_executor() -> ThreadPoolExecutor:
    """One worker thread for the whole process: populating is bound by memory bandwidth,
    and one thread keeps it off every writer's path without competing with them."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="mmstream-prefault")
        return _executor


def _prefault_window() -> int:
    return max(PREFAULT_MIN, min(PREFAULT_AHEAD, PREFAULT_BUDGET // max(1, _open_caches)))


def _count_open(delta: int) -> None:
    global _open_caches
    with _executor_lock:
        _open_caches += delta


@attrs.frozen
class PrefaultState:
    """A snapshot of :meth:`MmapCache.prefault_state`."""

    #: Pages are pre-faulted ahead of the writer (off with pwrite, or if the kernel refused).
    enabled: bool
    #: ``[0, prefaulted)`` needs no pre-faulting.
    prefaulted: int
    #: A prefault of this cache is scheduled or running.
    populating: bool


class MmapCache(FileDescriptorCache):
    """One stream file, mapped read-write in segments of ``options.segment_size`` bytes.

    Segment ``k`` maps ``[k * segment_size, (k + 1) * segment_size)`` of the file, the last
    one only up to the file's end: nothing is ever mapped past the end, so no access can
    SIGBUS. Growth reserves disk blocks first (a full disk is :class:`NoSpaceError` from the
    write that needed them), then extends the last, partial segment in place (``mremap``,
    so pages already touched keep their page tables) and adds new ones; segments already
    full are never touched again. Shrinking (``resize`` down, ``finalize``) unmaps the
    segments past the new end, and maps the new last one afresh, before the file is
    truncated. Each mapping holds a duplicate of the descriptor (CPython's mmap does), so an
    open cache costs one descriptor plus one per segment.

    Pages are pre-faulted (``MADV_POPULATE_WRITE``, Linux 5.14+) in a window of up to
    ``PREFAULT_AHEAD`` bytes ahead of the writer when ``options.prefault`` is set: one
    madvise per half window written replaces hundreds of first-touch page faults.
    ``create`` populates the first window itself; after that the madvise runs in a
    process-wide worker thread, never in ``write``: a write that crosses the middle of the
    window only schedules the next one (at most one in flight per cache) and copies on. The worker holds ``_map_lock``, which every change of the mappings
    (growth, shrink, close) takes too, and checks ``_map_generation`` under it, so it never
    advises a range that was unmapped or moved since it was scheduled; writes and reads do
    not take that lock.

    After ``finalize`` the cache stays open and mapped read-write at the final size: reads
    keep working (followers of a stream read on while it is finalized), and a write would
    grow the file again; refusing writes to a finished stream is the manager's job.

    ``flush`` on Linux is ``fdatasync`` of a duplicated descriptor, done outside the lock:
    there ``msync(MS_SYNC)`` is the same write-back of the shared page cache, but
    ``mmap.flush`` holds the GIL for the whole call (measured: 270 ms for 512 MiB dirty),
    which would stall the event loop even from a worker thread. Elsewhere it is ``msync``.

    One re-entrant lock covers every call; a write or read holds it for one ``memcpy``.
    """

    #: Sync through the file descriptor rather than msync; a subclass may force msync.
    sync_through_fd: bool = sys.platform.startswith("linux")

    @property
    def segments(self) -> tuple[mmap.mmap, ...]:
        """The mappings in file order (a growth keeps the full ones: tests check that)."""
        return tuple(self._segments)

    def prefault_state(self) -> PrefaultState:
        """Where pre-faulting stands, for tests and diagnostics."""
        return PrefaultState(
            enabled=self._prefault, prefaulted=self._prefaulted, populating=self._populating
        )

    def __init__(self, path: Path | str, options: CacheOptions | None = None) -> None:
        super().__init__(path, options)
        segment_size = self._options.segment_size
        if segment_size % mmap.ALLOCATIONGRANULARITY:
            raise InvalidArgumentError(
                f"segment_size {segment_size} must be a multiple of the mmap allocation "
                f"granularity ({mmap.ALLOCATIONGRANULARITY} bytes)"
            )
        self._segment_size = segment_size
        self._segments: list[mmap.mmap] = []
        #: Writes go to the page cache with pwrite (``mmap_write = "pwrite"``), not through
        #: the mapping; the mapping then only serves reads and needs no pre-faulting.
        self._pwrite = self._options.mmap_write == "pwrite"
        self._prefault = (
            not self._pwrite
            and self._options.prefault
            and _HAS_MADVISE
            and _MADV_POPULATE_WRITE is not None
        )
        self._prefaulted = 0  # [0, _prefaulted) needs no pre-faulting
        self._prefault_at = _NEVER  # a write ending past this refills the window
        self._populating = False  # a prefault of this cache is scheduled or running
        self._map_generation = 0  # bumped under _map_lock whenever a mapping changes
        self._counted = False  # counted in _open_caches
        self._map_lock = threading.Lock()
        # The fast path of ``write``: a write into ``[_fast_base, _fast_limit)`` is a plain
        # copy into ``_fast_segment`` (the last segment), with nothing else to do. The limit
        # is kept below the file's end and the prefault trigger by ``_refresh_fast_locked``
        # whenever either changes, and is -1 while the cache is closed.
        self._fast_segment = _NO_SEGMENT
        self._fast_base = 0
        self._fast_limit = -1

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return (
            f"<MmapCache {str(self._path)!r} {state} size={self._size} "
            f"segments={len(self._segments)}>"
        )

    # -- life cycle ---------------------------------------------------------------------------

    def create(self, initial_size: int) -> None:
        size = check_size("initial_size", initial_size)
        with self._lock:
            if self._fd is not None:
                raise InvalidArgumentError(f"cache {self._path} is already open")
            with os_errors("creating", self._path):
                fd = os.open(self._path, CREATE_FLAGS, 0o600)
            try:
                reserve_blocks(fd, 0, size, self._path)
                self._cover_locked(fd, size)
            except BaseException:
                self._unmap_all_locked()
                os.close(fd)
                self._path.unlink(missing_ok=True)
                raise
            self._fd, self._size, self._data_end = fd, size, 0
            self._prefaulted = 0
            self._count_locked(True)
            # The first window now, in the creating thread (the manager creates in a
            # worker thread), before the first byte arrives.
            self._prefault_now_locked(0, 0)

    def open(self) -> None:
        with self._lock:
            if self._fd is not None:
                raise InvalidArgumentError(f"cache {self._path} is already open")
            with os_errors("opening", self._path):
                fd = os.open(self._path, OPEN_FLAGS)
            try:
                with os_errors("opening", self._path):
                    size = os.fstat(fd).st_size
                self._cover_locked(fd, size)
            except BaseException:
                self._unmap_all_locked()
                os.close(fd)
                raise
            self._fd, self._size, self._data_end = fd, size, size
            self._prefaulted = size  # existing bytes are not pre-faulted; appends will be
            self._count_locked(True)
            self._rearm_prefault_locked()

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            self._refresh_fast_locked()
            if fd is not None:
                self._count_locked(False)
                self._unmap_all_locked()
                os.close(fd)

    def _count_locked(self, open_: bool) -> None:
        if open_ != self._counted and (self._prefault or not open_):
            self._counted = open_
            _count_open(1 if open_ else -1)

    # -- the hot paths ------------------------------------------------------------------------

    def write(self, offset: int, data: Buffer) -> int:
        if self._pwrite:
            return self._write_through_fd(offset, data)
        # The hot path: about 0.35 us of Python around the copy. Bytes, bytearrays and
        # C-contiguous memoryviews go into the mapping as they are, a plain in-range int
        # offset skips the general checks, and a write that needs no growth, no prefault
        # hand-off and no segment span is one comparison and one slice assignment.
        view: Buffer
        if type(data) is bytes or type(data) is bytearray:
            view, count = data, len(data)
        elif type(data) is memoryview and data.c_contiguous:
            view, count = data, data.nbytes
        else:
            view = memoryview(data).cast("B")
            count = view.nbytes
        if type(offset) is int and 0 <= offset <= MAX_FILE_SIZE - count:
            end = offset + count
        else:
            end = check_write(offset, count)
        lock = self._lock
        lock.acquire()  # not ``with``: measured ~0.3 us cheaper per call on Python 3.11
        try:
            base = self._fast_base
            if count > 0 and end <= self._fast_limit and offset >= base:
                self._fast_segment[offset - base : end - base] = view
                if end > self._data_end:
                    self._data_end = end
                return count
            fd = self._require_fd()
            if count:
                self._write_locked(fd, offset, end, view)
            return count
        finally:
            lock.release()

    def write_batch(self, ops: Sequence[tuple[int, Buffer]]) -> int:
        """Every op is checked before any is applied (a bad one anywhere applies nothing);
        then one lock, one growth to the batch's highest end, one prefault hand-off, and
        one slice assignment per op: the server's batches of upload frames take this path
        (a 4 KiB op: ~0.4 us of CPU, the copy included, against ~0.55 us through ``write``)."""
        check_batch(ops, self._options.batch_limit)
        total = high = 0
        low = MAX_FILE_SIZE
        plain = True  # every op's data is bytes-like with len() == its byte count
        for offset, data in ops:
            if (
                type(data) is bytes
                or type(data) is bytearray
                or (
                    type(data) is memoryview
                    and data.ndim == 1
                    and data.itemsize == 1
                    and data.c_contiguous
                )
            ):
                count = len(data)
            else:
                count = memoryview(data).nbytes
                plain = False
            if type(offset) is not int or not 0 <= offset <= MAX_FILE_SIZE - count:
                check_write(offset, count)  # raises: nothing of the batch is applied
            if count:
                total += count
                if offset + count > high:
                    high = offset + count
                if offset < low:
                    low = offset
        if not plain:  # other buffers as flat bytes (a non-contiguous one raises here)
            ops = [(offset, memoryview(data).cast("B")) for offset, data in ops]
        with self._lock:
            fd = self._require_fd()
            if not total:
                return 0
            if self._pwrite:
                self._pwrite_ops_locked(fd, ops, high)
                return total
            self._make_room_locked(fd, low, high)
            base, segment = self._fast_base, self._fast_segment
            limit = base + len(segment)
            for offset, data in ops:
                end = offset + len(data)  # type: ignore[arg-type]  # plain: sized
                if offset >= base and end <= limit:
                    segment[offset - base : end - base] = data
                elif end > offset:
                    self._write_span_locked(offset, data)
            if high > self._data_end:
                self._data_end = high
        return total

    def _write_locked(self, fd: int, offset: int, end: int, view: Buffer) -> None:
        """A write off the fast path: it grows the file, hands the next window to the
        prefault worker, or lands in an earlier segment or across two."""
        self._make_room_locked(fd, offset, end)
        self._write_span_locked(offset, view)
        if end > self._data_end:
            self._data_end = end

    def _make_room_locked(self, fd: int, offset: int, end: int) -> None:
        """Grow for a write of ``[offset, end)``, and hand the window ahead of it to the
        prefault worker once the write crosses the window's middle (or the file's end)."""
        if end > self._size:
            self._grow_locked(fd, grown_size(self._size, end, self._options))
        if end > self._prefault_at:
            self._schedule_prefault_locked(offset, end)

    def _write_through_fd(self, offset: int, data: Buffer) -> int:
        """``pwrite`` into the page cache the mapping shares: what it writes is readable
        through the mapping at once (Linux has one page cache for both), a first write
        to a page costs no page fault (ext4's fault path for a shared mapping costs 4x the
        copy, measured in docs/backends.md), and a full disk is an ENOSPC error rather
        than a SIGBUS. Bytes that fit the file (the server's every upload frame) are one
        ``pwrite`` and nothing else: about 1-2 us of Python around the system call for a
        4 KiB frame, against 2-4 us through the batch path."""
        view: Buffer
        if type(data) is bytes and type(offset) is int and 0 <= offset <= MAX_FILE_SIZE - len(data):
            view, count = data, len(data)
            end = offset + count
        else:
            view = memoryview(data).cast("B")
            count = view.nbytes
            end = check_write(offset, count)
        lock = self._lock
        lock.acquire()
        try:
            fd = self._require_fd()
            if not count:
                return 0
            if end > self._size or count > PWRITE_BYTES:
                self._pwrite_ops_locked(fd, ((offset, view),), end)
                return count
            try:
                written = os.pwrite(fd, view, offset)
                if written < count:
                    _pwritev_all(fd, [memoryview(view)[written:]], offset + written)
            except OSError as exc:
                with os_errors("writing", self._path):
                    raise exc from None
            if end > self._data_end:
                self._data_end = end
            return count
        finally:
            lock.release()

    def _pwrite_ops_locked(self, fd: int, ops: Sequence[tuple[int, Buffer]], high: int) -> None:
        """Grow to ``high``, then write ``ops`` (already checked) with one ``pwritev`` per
        run of ops that follow each other on the file, up to :data:`PWRITE_BYTES` a call
        (4 frames of 4 KiB; a larger op goes alone, in pieces that end on multiples of it)."""
        if high > self._size:
            self._grow_locked(fd, grown_size(self._size, high, self._options))
        run: list[memoryview] = []
        start = position = run_bytes = 0
        try:
            for offset, data in ops:
                view = memoryview(data).cast("B")
                size = view.nbytes
                if not size:
                    continue
                if run and (
                    offset != position or len(run) == _IOV_MAX or run_bytes + size > PWRITE_BYTES
                ):
                    _pwritev_all(fd, run, start)
                    run = []
                if size > PWRITE_BYTES:
                    _pwrite_pieces(fd, view, offset)
                    position = offset + size
                    continue
                if not run:
                    start = position = offset
                    run_bytes = 0
                run.append(view)
                position += size
                run_bytes += size
            if run:
                _pwritev_all(fd, run, start)
        except OSError as exc:
            with os_errors("writing", self._path):
                raise exc from None
        if high > self._data_end:
            self._data_end = high

    def _write_span_locked(self, offset: int, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        while view:
            index, start = divmod(offset, self._segment_size)
            segment = self._segments[index]
            count = min(len(segment) - start, len(view))
            segment[start : start + count] = view[:count]
            view = view[count:]
            offset += count

    def read(self, offset: int, length: int) -> bytes:
        lock = self._lock
        lock.acquire()  # as in write: cheaper than ``with``
        try:
            self._require_fd()
            data_end = self._data_end
            if (
                type(offset) is int
                and type(length) is int
                and 0 <= offset <= data_end
                and 0 <= length <= MAX_FILE_SIZE
            ):  # the checks of check_read, inlined for the hot path
                start, stop = offset, min(offset + length, data_end)
            else:
                start, stop = check_read(offset, length, data_end)
            if start == stop:
                return b""
            index, first = divmod(start, self._segment_size)
            segment = self._segments[index]
            if first + (stop - start) <= len(segment):
                return segment[first : first + stop - start]
            parts = []
            while start < stop:
                index, first = divmod(start, self._segment_size)
                segment = self._segments[index]
                count = min(len(segment) - first, stop - start)
                parts.append(segment[first : first + count])
                start += count
            return b"".join(parts)
        finally:
            lock.release()

    def read_batch(self, ops: Sequence[tuple[int, int]]) -> list[bytes]:
        check_batch(ops, self._options.batch_limit)
        with self._lock:
            self._require_fd()
            return [self.read(offset, length) for offset, length in ops]

    # -- size changes -------------------------------------------------------------------------

    def _grow_locked(self, fd: int, new_size: int) -> None:
        """Reserve, then map ``[size, new_size)``; on failure nothing has changed."""
        try:
            self._grow_steps_locked(fd, new_size)
        finally:
            self._refresh_fast_locked()

    def _grow_steps_locked(self, fd: int, new_size: int) -> None:
        old = self._size
        window_end = -(-old // self._segment_size) * self._segment_size
        try:
            if old < window_end < new_size:
                # Fill the partial last segment first: its mremap then ends at the file's end.
                self._grow_step_locked(fd, window_end)
            self._grow_step_locked(fd, new_size)
        except BaseException:
            # Give back a partial reservation, but only once nothing maps past ``old``.
            try:
                self._cover_locked(fd, old)
                os.ftruncate(fd, old)
            except OSError:
                pass
            else:
                self._size = old
            raise

    def _grow_step_locked(self, fd: int, new_size: int) -> None:
        reserve_blocks(fd, self._size, new_size - self._size, self._path)
        self._cover_locked(fd, new_size, in_place=True)
        self._size = new_size

    def _shrink_locked(self, fd: int, new_size: int) -> None:
        released = self._cover_locked(fd, new_size)
        self._size = new_size
        self._prefaulted = min(self._prefaulted, new_size)
        self._rearm_prefault_locked()
        if not released:
            problem = "a view of its mapping is in use"
            raise StorageError(
                f"cannot truncate {self._path}: {problem}",
                public=f"cannot truncate {self._path.name}: {problem}",
            )
        with os_errors("truncating", self._path):
            os.ftruncate(fd, new_size)

    def _cover_locked(self, fd: int, end: int, *, in_place: bool = False) -> bool:
        """Make the segments map exactly ``[0, end)`` of the file, which is at least that long.

        Only the last segment changes: with ``in_place`` (growth, the file ending exactly at
        ``end``) it is extended by ``mremap``, which keeps its page tables, so pages already
        touched do not fault again; otherwise, or if that fails, it is mapped afresh before
        the old mapping is dropped, so a failure leaves the old state. Full segments are
        never touched. Returns False if a dropped mapping could not be unmapped yet.
        """
        segment_size = self._segment_size
        segments = self._segments
        count = -(-end // segment_size)
        released = True
        with self._map_lock, os_errors("mapping", self._path):
            self._map_generation += 1
            while len(segments) > count:
                released = self._unmap(segments.pop()) and released
            if segments:
                base = (len(segments) - 1) * segment_size
                length = min(segment_size, end - base)
                if len(segments[-1]) != length:
                    released = self._remap_last(fd, base, length, in_place) and released
            while len(segments) < count:
                base = len(segments) * segment_size
                segments.append(self._map(fd, base, min(segment_size, end - base)))
        return released

    def _remap_last(self, fd: int, base: int, length: int, in_place: bool) -> bool:
        segment = self._segments[-1]
        if in_place and base + length == self._file_end(fd):
            try:
                # mmap.resize truncates the file to base + length first: a no-op here,
                # since the file already ends there.
                segment.resize(length)
            except (BufferError, OSError, SystemError):
                pass  # exported views, or no mremap on this platform
            else:
                return True
        fresh = self._map(fd, base, length)
        self._segments[-1] = fresh
        return self._unmap(segment)

    @staticmethod
    def _file_end(fd: int) -> int:
        return os.fstat(fd).st_size

    @staticmethod
    def _map(fd: int, offset: int, length: int) -> mmap.mmap:
        return mmap.mmap(fd, length, offset=offset)

    @staticmethod
    def _unmap(segment: mmap.mmap) -> bool:
        try:
            segment.close()
        except BufferError:
            # A memoryview of it is still alive: the mapping goes when that view does.
            return False
        return True

    def _unmap_all_locked(self) -> bool:
        released = True
        with self._map_lock:
            self._map_generation += 1
            while self._segments:
                released = self._unmap(self._segments.pop()) and released
        return released

    # -- durability ---------------------------------------------------------------------------

    def flush(self) -> None:
        with self._lock:
            fd = self._require_fd()
            # Pages written with pwrite are the descriptor's to sync (msync need not cover
            # them everywhere); on Linux it is the same write-back either way.
            if not self.sync_through_fd and not self._pwrite:
                with os_errors("syncing", self._path):
                    for segment in self._segments:
                        segment.flush()
                return
            with os_errors("syncing", self._path):
                fd = os.dup(fd)  # outlives a concurrent close() while we sync unlocked
        try:
            with os_errors("syncing", self._path):
                _fdatasync(fd)
        finally:
            os.close(fd)

    def finalize(self, final_size: int) -> None:
        size = check_size("final_size", final_size)
        with self._lock:
            fd = self._require_fd()
            if size > self._data_end:
                raise InvalidArgumentError(
                    f"final size {size} is past the written data ({self._data_end} bytes)"
                )
            if not self.sync_through_fd:
                with os_errors("syncing", self._path):
                    for segment in self._segments:
                        segment.flush()
            if size < self._size:
                self._shrink_locked(fd, size)
            self._data_end = size
            with os_errors("finalizing", self._path):
                fd = os.dup(fd)
        try:
            with os_errors("finalizing", self._path):
                os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self._path)

    # -- hints --------------------------------------------------------------------------------

    def _rearm_prefault_locked(self) -> None:
        if not self._prefault or self._populating:
            self._prefault_at = _NEVER  # the worker rearms when it is done
        elif self._prefaulted < self._size:
            self._prefault_at = self._prefaulted - _prefault_window() // 2
        else:
            self._prefault_at = self._size  # the next growth refills the window
        self._refresh_fast_locked()

    def _refresh_fast_locked(self) -> None:
        """Recompute the fast path's segment and limit after the size, the segments, the
        prefault trigger or the open state changed."""
        segments = self._segments
        if self._fd is None or not segments:
            self._fast_limit = -1
            return
        segment = segments[-1]
        base = (len(segments) - 1) * self._segment_size
        self._fast_segment, self._fast_base = segment, base
        self._fast_limit = min(self._size, self._prefault_at, base + len(segment))

    def _prefault_now_locked(self, offset: int, end: int) -> None:
        """Populate the window ahead of ``[offset, end)`` in this thread: for a fresh stream
        (``create``), where a worker started by the first write would populate the very
        pages the writer is copying into, and the two together fault them slower than
        either alone (measured: 4 MiB in 3-5 ms instead of 0.6 ms). Not after a growth:
        that would hold the lock readers need for as long as populating takes (4 MiB of a
        fallocated ext4 file: 0.6-25 ms here), and followers read on the event loop."""
        start = max(self._prefaulted, offset) // _PAGE * _PAGE
        stop = min(self._size, max(end, start) + _prefault_window())
        if self._prefault and _madvise is not None and start < stop:
            with self._map_lock:
                if not self._populate_map_locked(start, stop):
                    self._prefault = False  # refused: EINVAL before Linux 5.14
            self._prefaulted = max(self._prefaulted, stop)
        self._rearm_prefault_locked()

    def _schedule_prefault_locked(self, offset: int, end: int) -> None:
        """Hand the window from the writer's position to the worker thread; a hint only."""
        start = max(self._prefaulted, offset) // _PAGE * _PAGE
        stop = min(self._size, max(end, start) + _prefault_window())
        self._prefaulted = max(self._prefaulted, stop)
        if start >= stop or _madvise is None:
            self._rearm_prefault_locked()
            return
        self._populating = True
        self._prefault_at = _NEVER
        self._refresh_fast_locked()
        try:
            _prefault_executor().submit(self._populate, start, stop, self._map_generation)
        except RuntimeError:  # the interpreter is shutting down
            self._populating = False
            self._prefault = False
            self._rearm_prefault_locked()

    def _populate(self, start: int, stop: int, generation: int) -> None:
        """The worker's half: MADV_POPULATE_WRITE over ``[start, stop)`` with the GIL
        released, unless the mappings changed since the window was scheduled."""
        refused = False
        with self._map_lock:
            if generation == self._map_generation and self._fd is not None:
                refused = not self._populate_map_locked(start, stop)
        with self._lock:
            self._populating = False
            if refused:  # EINVAL before Linux 5.14, or a file system that cannot
                self._prefault = False
            self._rearm_prefault_locked()

    def _populate_map_locked(self, start: int, stop: int) -> bool:
        assert _madvise is not None and _MADV_POPULATE_WRITE is not None
        position = start
        while position < stop:
            index, first = divmod(position, self._segment_size)
            if index >= len(self._segments):
                break
            segment = self._segments[index]
            count = min(len(segment) - first, stop - position)
            if count <= 0:
                break
            anchor = ctypes.c_char.from_buffer(segment)  # exports the buffer: keep it short
            address = ctypes.addressof(anchor)
            del anchor
            if _madvise(address + first, count, _MADV_POPULATE_WRITE) != 0:
                return ctypes.get_errno() not in (errno.EINVAL, errno.EOPNOTSUPP)
            position += count
        return True

    def _advise_locked(self, start: int, stop: int, advice: int | None) -> None:
        if advice is None or not _HAS_MADVISE:
            return
        position = start // _PAGE * _PAGE  # segments start on page boundaries too
        while position < stop:
            index, first = divmod(position, self._segment_size)
            segment = self._segments[index]
            count = min(len(segment) - first, stop - position)
            segment.madvise(advice, first, count)
            position += count

    def prefetch(self, offset: int, length: int) -> None:
        self._advise(offset, length, _MADV_WILLNEED)

    def evict(self, offset: int, length: int) -> None:
        # MADV_DONTNEED on a shared file mapping drops page-table entries; dirty pages stay
        # in the page cache and reach the file, so no written byte is lost.
        self._advise(offset, length, _MADV_DONTNEED)

    def _advise(self, offset: int, length: int, advice: int | None) -> None:
        with self._lock:
            self._require_fd()
            start, stop = check_read(offset, length, self._data_end)
            with os_errors("advising", self._path):
                self._advise_locked(start, stop, advice)
