"""Fault injection for the storage tests (tests only, never shipped).

Two pieces, both forwarding to the real thing, so every byte still goes to a real file:

- :class:`PowerModel` models what survives a power cut in the cache directory. The data files
  go through :class:`ModelledCache`, a wrapper backend that records a file's bytes as durable
  only when its ``flush``/``finalize`` returns; the sidecar writes and directory syncs of the
  streams layer go through :class:`OsProxy`, an ``os`` stand-in installed in the modules that
  call them. A name is durable once its directory was synced, a file's bytes once the file
  was. Every call is a numbered *step*; at step ``crash_at`` the power goes: that call and
  every later one raise :class:`PowerCut`, and :meth:`PowerModel.cut` rebuilds the
  directory as the disk would come back, forgetting every write not followed by a sync.
- :class:`FailingOs` makes the Nth call of chosen functions (``posix_fallocate``, ``fsync``,
  ``fdatasync``, ``ftruncate``) fail with a chosen errno, in every module that makes them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import mmstream.cache
from mmstream.cache import Buffer, CacheFactory, CacheOptions, MemoryMappedCache
from mmstream.errors import StorageError
from mmstream.registry import BackendRegistry
from mmstream.streams import _manager, _recovery, _sidecar


class PowerCut(StorageError):
    """The power went at this call: nothing from here on reaches the disk."""

    def __init__(self, what: str) -> None:
        super().__init__(f"power cut at {what}", errno=errno.EIO)


@functools.cache
def load_backend(name: str) -> CacheFactory:
    """The installed backend ``name``, looked up once (entry points are slow to scan)."""
    return BackendRegistry().load(name)


def one_backend(factory: CacheFactory) -> BackendRegistry:
    """A registry whose every name loads ``factory``."""

    class OneBackend(BackendRegistry):
        def load(self, name: str) -> CacheFactory:
            return factory

    return OneBackend()


@contextlib.contextmanager
def patched(module: ModuleType, **names: Any) -> Iterator[None]:
    saved = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


# -- power cuts --------------------------------------------------------------------------


class PowerModel:
    """What the disk holds durably for one directory, and the crash switch."""

    def __init__(self, directory: Path, *, crash_at: int | None = None) -> None:
        self.directory = directory
        self.crash_at = crash_at
        self.steps: list[str] = []
        self.crashed = False
        #: Set by a test to drop the directory sync of sidecar writes (it must then fail).
        self.skip_sidecar_directory_sync = False
        #: Set by a test: files with these suffixes keep their unsynced bytes through the
        #: cut (the disk happened to write them back), e.g. ``(".sum",)``.
        self.keep_unsynced: tuple[str, ...] = ()
        #: Set by a test: ``(suffix, n)`` flips the nth byte from the first unsynced change
        #: of each kept file with that suffix (a torn write; synced bytes are never torn).
        self.tear: tuple[str, int] | None = None
        self.kept: dict[str, bytes] = {}
        self._lock = threading.Lock()
        #: The durable directory (name -> inode) and the durable bytes of each inode.
        self.names: dict[str, int] = {}
        self.contents: dict[int, bytes] = {}
        if directory.exists():  # what is there at the start counts as durable
            self.synced_directory()
            for name, inode in self.names.items():
                self.contents[inode] = (directory / name).read_bytes()

    def step(self, what: str) -> None:
        with self._lock:
            if self.crashed:
                raise PowerCut(what)
            self.steps.append(what)
            if len(self.steps) == self.crash_at:
                self.crashed = True
                self.kept = self._unsynced_kept()  # nothing done after the cut reaches them
                raise PowerCut(what)

    def synced_fd(self, fd: int) -> None:
        # The descriptor may be write-only: read the same file through /proc (Linux).
        self.synced_path(Path(f"/proc/self/fd/{fd}"), follow=True)

    def synced_path(self, path: Path, *, follow: bool = False) -> None:
        fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
        try:
            st = os.fstat(fd)
            self.contents[st.st_ino] = os.pread(fd, st.st_size, 0) if st.st_size else b""
        finally:
            os.close(fd)

    def synced_directory(self) -> None:
        with os.scandir(self.directory) as entries:
            self.names = {e.name: e.inode() for e in entries if e.is_file(follow_symlinks=False)}

    def cut(self) -> None:
        """Rebuild the directory as a power cut leaves it (call once the manager is gone)."""
        kept = self.kept if self.crashed else self._unsynced_kept()
        for name in os.listdir(self.directory):
            os.unlink(self.directory / name)
        for name, inode in self.names.items():
            synced = self.contents.get(inode, b"")
            data = kept.get(name, synced)
            tear = None
            if self.tear is not None and name.endswith(self.tear[0]):
                tear = _first_difference(data, synced) + self.tear[1]
            if name in kept and tear is not None and len(data) > tear:
                torn = bytearray(data)
                torn[tear] ^= 0x40
                data = bytes(torn)
            (self.directory / name).write_bytes(data)

    def _unsynced_kept(self) -> dict[str, bytes]:
        """The files whose unsynced bytes the disk keeps, as they are now."""
        if not self.keep_unsynced:
            return {}
        return {
            entry.name: Path(entry.path).read_bytes()
            for entry in os.scandir(self.directory)
            if entry.name.endswith(self.keep_unsynced) and entry.is_file(follow_symlinks=False)
        }

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route the streams layer's sidecar writes, unlinks and directory syncs through
        the model (data files go through :meth:`factory`)."""
        proxy = OsProxy(self)
        with (
            patched(_sidecar, os=proxy, fsync_directory=self.sidecar_directory_sync),
            patched(_manager, os=proxy, fsync_directory=self.directory_sync),
        ):
            yield

    def directory_sync(self, path: Path) -> None:
        self.step(f"fsync directory of {path.name}")
        mmstream.cache.fsync_directory(path)
        self.synced_directory()

    def sidecar_directory_sync(self, path: Path) -> None:
        if self.skip_sidecar_directory_sync:
            self.step(f"(dropped) fsync directory of {path.name}")
            return
        self.directory_sync(path)

    def factory(self, base: CacheFactory) -> CacheFactory:
        def make(path: Path, options: CacheOptions) -> MemoryMappedCache:
            return ModelledCache(base(path, options), self)

        return make


def _first_difference(data: bytes, synced: bytes) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(data, synced, strict=False)) if a != b),
        min(len(data), len(synced)),
    )


class OsProxy:
    """The ``os`` module as the sidecar and manager code see it under a :class:`PowerModel`."""

    def __init__(self, model: PowerModel) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            self._model.step(f"open {Path(path).name}")
        return os.open(path, flags, mode)

    def write(self, fd: int, data: Buffer) -> int:
        self._model.step("write sidecar")
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        self._model.step("fsync sidecar")
        os.fsync(fd)
        self._model.synced_fd(fd)

    def rename(self, src: Any, dst: Any) -> None:
        self._model.step(f"rename {Path(src).name}")
        os.rename(src, dst)

    def unlink(self, path: Any) -> None:
        self._model.step(f"unlink {Path(path).name}")
        os.unlink(path)


class ModelledCache:
    """A real backend whose bytes count as durable only once a flush or finalize returned."""

    def __init__(self, inner: MemoryMappedCache, model: PowerModel) -> None:
        self._inner = inner
        self._model = model

    def _step(self, what: str) -> None:
        self._model.step(f"{what} {self._inner.path.name}")

    @property
    def path(self) -> Path:
        return self._inner.path

    @property
    def is_open(self) -> bool:
        return self._inner.is_open

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def data_end(self) -> int:
        return self._inner.data_end

    def create(self, initial_size: int) -> None:
        self._step("create")
        self._inner.create(initial_size)

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        self._inner.close()

    def write(self, offset: int, data: Buffer) -> int:
        self._step("write")
        return self._inner.write(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        return self._inner.read(offset, length)

    def resize(self, new_size: int) -> None:
        self._step("resize")
        self._inner.resize(new_size)

    def flush(self) -> None:
        self._step("flush")
        self._inner.flush()
        self._model.synced_path(self._inner.path)

    def finalize(self, final_size: int) -> None:
        self._step("finalize")
        self._inner.finalize(final_size)  # syncs the file and its directory
        self._model.synced_path(self._inner.path)
        self._model.synced_directory()

    def write_batch(self, ops: Sequence[tuple[int, Buffer]]) -> int:
        self._step("write_batch")
        return self._inner.write_batch(ops)

    def read_batch(self, ops: Sequence[tuple[int, int]]) -> list[bytes]:
        return self._inner.read_batch(ops)

    def prefetch(self, offset: int, length: int) -> None:
        self._inner.prefetch(offset, length)

    def evict(self, offset: int, length: int) -> None:
        self._inner.evict(offset, length)


# -- failing system calls ----------------------------------------------------------------

#: The calls test 3 fails: reserving space, syncing and truncating.
FAILABLE = ("posix_fallocate", "fsync", "fdatasync", "ftruncate")
SYNCS = ("fsync", "fdatasync")


class FailingOs:
    """Counts calls of ``functions`` (:data:`FAILABLE` unless given: ``pwrite`` is the
    other one a test may pick) and fails the ``fail_at``-th with ``fail_errno``; installed
    as ``os`` in every module that makes such calls."""

    def __init__(
        self,
        *,
        fail_at: int | None = None,
        fail_errno: int = errno.EIO,
        functions: Sequence[str] = FAILABLE,
    ) -> None:
        self.fail_at = fail_at
        self.fail_errno = fail_errno
        self.functions = functions
        self.calls: list[str] = []
        #: Every injected failure, as ``(call number, function, name of the file)``.
        self.failed: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(os, name)
        if name not in self.functions:
            return attribute

        def call(*args: Any) -> Any:
            with self._lock:
                self.calls.append(name)
                number = len(self.calls)
                if number == self.fail_at:
                    target = os.path.basename(os.readlink(f"/proc/self/fd/{args[0]}"))
                    self.failed.append((number, name, target))
                    raise OSError(self.fail_errno, os.strerror(self.fail_errno))
            return attribute(*args)

        return call

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        modules = [mmstream.cache, _sidecar, _recovery, _manager]
        for name in ("mmstream_file._cache", "mmstream_mmap._cache"):
            with contextlib.suppress(ImportError):
                modules.append(__import__(name, fromlist=["_cache"]))
        with contextlib.ExitStack() as stack:
            for module in modules:
                stack.enter_context(patched(module, os=self))
            yield
