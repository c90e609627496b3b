"""An example third-party mmstream cache backend on buffered Python file objects.

It is small on purpose and written as an outside author would: it imports only the public
``mmstream.cache`` helpers and ``mmstream.errors``, registers itself in the
``mmstream.backends`` entry-point group, and proves itself with ``mmstream.testing``.
A buffered file object has one file position, so one lock serialises every call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from mmstream.cache import (
    Buffer,
    CacheOptions,
    check_batch,
    check_read,
    check_size,
    check_write,
    fsync_directory,
    grown_size,
    os_errors,
    reserve_blocks,
)
from mmstream.errors import CacheClosedError, InvalidArgumentError, StorageError

__all__ = ["BufferedFileCache"]

_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


class BufferedFileCache:
    """One stream file through ``open(..., "r+b")``: seek, then read or write.

    Sizes change only after the Python buffer is flushed, so the file on disk never has
    buffered bytes waiting beyond its end.
    """

    def __init__(self, path: Path | str, options: CacheOptions | None = None) -> None:
        self._path = Path(path)
        self._options = options or CacheOptions()
        self._file: BinaryIO | None = None
        self._size = 0
        self._data_end = 0
        self._lock = threading.RLock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def is_open(self) -> bool:
        return self._file is not None

    @property
    def size(self) -> int:
        return self._size

    @property
    def data_end(self) -> int:
        return self._data_end

    def _require_file(self) -> BinaryIO:
        if self._file is None:
            raise CacheClosedError(f"cache {self._path} is closed")
        return self._file

    def _open(self, flags: int, what: str) -> BinaryIO:
        if self._file is not None:
            raise InvalidArgumentError(f"cache {self._path} is already open")
        with os_errors(what, self._path):
            fd = os.open(self._path, flags, 0o600)
        return os.fdopen(fd, "r+b")

    def create(self, initial_size: int) -> None:
        size = check_size("initial_size", initial_size)
        with self._lock:
            file = self._open(_CREATE_FLAGS, "creating")
            try:
                reserve_blocks(file.fileno(), 0, size, self._path)
            except BaseException:
                file.close()
                self._path.unlink(missing_ok=True)
                raise
            self._file, self._size, self._data_end = file, size, 0

    def open(self) -> None:
        with self._lock:
            file = self._open(_OPEN_FLAGS, "opening")
            size = os.fstat(file.fileno()).st_size
            self._file, self._size, self._data_end = file, size, size

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
            if file is not None:
                with os_errors("closing", self._path):
                    file.close()  # flushes the buffer; a failure here is a lost write

    def write(self, offset: int, data: Buffer) -> int:
        view = memoryview(data).cast("B")
        end = check_write(offset, view.nbytes)
        with self._lock:
            file = self._require_file()
            if not view:
                return 0
            with os_errors("writing", self._path):
                if end > self._size:
                    file.flush()
                    new_size = grown_size(self._size, end, self._options)
                    reserve_blocks(file.fileno(), self._size, new_size - self._size, self._path)
                    self._size = new_size
                file.seek(offset)
                file.write(view)
            self._data_end = max(self._data_end, end)
        return view.nbytes

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            file = self._require_file()
            start, stop = check_read(offset, length, self._data_end)
            with os_errors("reading", self._path):
                file.seek(start)
                data = file.read(stop - start)
            if len(data) != stop - start:
                raise StorageError(f"reading {self._path}: file shorter than written data")
            return data

    def _truncate(self, file: BinaryIO, size: int) -> None:
        file.flush()
        file.truncate(size)
        self._size = size

    def resize(self, new_size: int) -> None:
        size = check_size("new_size", new_size)
        with self._lock:
            file = self._require_file()
            if size < self._data_end:
                raise InvalidArgumentError(
                    f"cannot shrink {self._path} to {size}: {self._data_end} bytes are written"
                )
            with os_errors("resizing", self._path):
                if size > self._size:
                    file.flush()
                    reserve_blocks(file.fileno(), self._size, size - self._size, self._path)
                    self._size = size
                elif size < self._size:
                    self._truncate(file, size)

    def flush(self) -> None:
        with self._lock:
            file = self._require_file()
            with os_errors("syncing", self._path):
                file.flush()
                os.fsync(file.fileno())

    def finalize(self, final_size: int) -> None:
        size = check_size("final_size", final_size)
        with self._lock:
            file = self._require_file()
            if size > self._data_end:
                raise InvalidArgumentError(
                    f"final size {size} is past the written data ({self._data_end} bytes)"
                )
            with os_errors("finalizing", self._path):
                self._truncate(file, size)
                os.fsync(file.fileno())
            self._data_end = size
        fsync_directory(self._path)

    def write_batch(self, ops: Sequence[tuple[int, Buffer]]) -> int:
        check_batch(ops, self._options.batch_limit)
        with self._lock:
            self._require_file()
            return sum(self.write(offset, data) for offset, data in ops)

    def read_batch(self, ops: Sequence[tuple[int, int]]) -> list[bytes]:
        check_batch(ops, self._options.batch_limit)
        with self._lock:
            self._require_file()
            return [self.read(offset, length) for offset, length in ops]

    def prefetch(self, offset: int, length: int) -> None:
        """Buffered files give no read-ahead hint worth making: only the range is checked."""
        with self._lock:
            self._require_file()
            check_read(offset, length, self._data_end)

    def evict(self, offset: int, length: int) -> None:
        self.prefetch(offset, length)
