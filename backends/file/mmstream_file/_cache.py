from __future__ import annotations

import os
from collections.abc import Sequence

from mmstream.cache import (
    CREATE_FLAGS,
    OPEN_FLAGS,
    Buffer,
    FileDescriptorCache,
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


class FileCache(FileDescriptorCache):
    """One stream file accessed with positional reads and writes (pread/pwrite are
    thread-safe on their own; the lock guards size changes and close)."""

    def create(self, initial_size: int) -> None:
        size = check_size("initial_size", initial_size)
        with self._lock:
            if self._fd is not None:
                raise InvalidArgumentError(f"cache {self._path} is already open")
            with os_errors("creating", self._path):
                fd = os.open(self._path, CREATE_FLAGS, 0o600)
            try:
                reserve_blocks(fd, 0, size, self._path)
            except BaseException:
                os.close(fd)
                self._path.unlink(missing_ok=True)
                raise
            self._fd, self._size, self._data_end = fd, size, 0

    def open(self) -> None:
        with self._lock:
            if self._fd is not None:
                raise InvalidArgumentError(f"cache {self._path} is already open")
            with os_errors("opening", self._path):
                fd = os.open(self._path, OPEN_FLAGS)
                size = os.fstat(fd).st_size
            self._fd, self._size, self._data_end = fd, size, size

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def write(self, offset: int, data: Buffer) -> int:
        view = memoryview(data).cast("B")
        end = check_write(offset, view.nbytes)
        with self._lock:
            fd = self._require_fd()
            if not view:
                return 0  # an empty write moves no high-water mark and grows nothing
            if end > self._size:
                self._grow_locked(fd, grown_size(self._size, end, self._options))
            with os_errors("writing", self._path):
                position = offset
                while view:
                    written = os.pwrite(fd, view, position)
                    view = view[written:]
                    position += written
            self._data_end = max(self._data_end, end)
        return end - offset

    def read(self, offset: int, length: int) -> bytes:
        fd = self._require_fd()
        start, stop = check_read(offset, length, self._data_end)
        with os_errors("reading", self._path):
            data = os.pread(fd, stop - start, start)
            if len(data) == stop - start:
                return data
            parts = [data]  # a short read from pread: keep reading until the range is whole
            got = len(data)
            while got < stop - start:
                more = os.pread(fd, stop - start - got, start + got)
                if not more:
                    problem = "file shorter than written data"
                    raise StorageError(
                        f"reading {self._path}: {problem}",
                        public=f"reading {self._path.name}: {problem}",
                    )
                parts.append(more)
                got += len(more)
            return b"".join(parts)

    def _grow_locked(self, fd: int, new_size: int) -> None:
        reserve_blocks(fd, self._size, new_size - self._size, self._path)
        self._size = new_size

    def _shrink_locked(self, fd: int, new_size: int) -> None:
        with os_errors("truncating", self._path):
            os.ftruncate(fd, new_size)
        self._size = new_size

    def flush(self) -> None:
        fd = self._require_fd()
        with os_errors("syncing", self._path):
            os.fsync(fd)

    def finalize(self, final_size: int) -> None:
        size = check_size("final_size", final_size)
        with self._lock:
            fd = self._require_fd()
            if size > self._data_end:
                raise InvalidArgumentError(
                    f"final size {size} is past the written data ({self._data_end} bytes)"
                )
            with os_errors("finalizing", self._path):
                os.ftruncate(fd, size)
                os.fsync(fd)
            fsync_directory(self._path)
            self._size = self._data_end = size

    def write_batch(self, ops: Sequence[tuple[int, Buffer]]) -> int:
        check_batch(ops, self._options.batch_limit)
        self._require_fd()  # an empty batch on a closed cache is an error too
        return sum(self.write(offset, data) for offset, data in ops)

    def read_batch(self, ops: Sequence[tuple[int, int]]) -> list[bytes]:
        check_batch(ops, self._options.batch_limit)
        self._require_fd()
        return [self.read(offset, length) for offset, length in ops]

    def prefetch(self, offset: int, length: int) -> None:
        self._advise(offset, length, getattr(os, "POSIX_FADV_WILLNEED", None))

    def evict(self, offset: int, length: int) -> None:
        self._advise(offset, length, getattr(os, "POSIX_FADV_DONTNEED", None))

    def _advise(self, offset: int, length: int, advice: int | None) -> None:
        fd = self._require_fd()
        start, stop = check_read(offset, length, self._data_end)
        if advice is None or stop <= start:
            return
        with os_errors("advising", self._path):
            os.posix_fadvise(fd, start, stop - start, advice)
