"""The cache directory: the start-up safety checks and the file names inside it.

mmstream refuses to start on a directory that someone else could tamper with: a symlink (it
could be pointed elsewhere after the check), one owned by another user, or one that is group-
or world-writable (others could plant files or symlinks with stream names). A missing
directory is created with mode 0700.

One manager per directory: two servers on one directory would each recover (and remove)
the other's half-written files. :func:`lock_cache_directory` takes an exclusive
``flock`` on the directory itself (no lock file to leave behind or mistake for a stream) for
the manager's life; the kernel drops it when the process dies, so a crash never leaves a
stale lock.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from ..cache import fsync_directory, os_errors
from ..errors import ConfigError

__all__ = [
    "DATA_SUFFIX",
    "INDEX_SUFFIX",
    "SIDECAR_SUFFIX",
    "SUM_SUFFIX",
    "checksum_path",
    "data_path",
    "index_path",
    "lock_cache_directory",
    "prepare_cache_directory",
    "sidecar_path",
]

DATA_SUFFIX = ".data"
SIDECAR_SUFFIX = ".json"
SUM_SUFFIX = ".sum"
#: Arrival times of a stream's bytes (see :mod:`._timeindex`); rebuilt if lost.
INDEX_SUFFIX = ".idx"


def data_path(directory: Path, stream_id: str) -> Path:
    return directory / (stream_id + DATA_SUFFIX)


def sidecar_path(directory: Path, stream_id: str) -> Path:
    return directory / (stream_id + SIDECAR_SUFFIX)


def checksum_path(directory: Path, stream_id: str) -> Path:
    return directory / (stream_id + SUM_SUFFIX)


def index_path(directory: Path, stream_id: str) -> Path:
    return directory / (stream_id + INDEX_SUFFIX)


def prepare_cache_directory(directory: Path) -> Path:
    """Create ``directory`` (0700) if missing and check it is safe; return its absolute path.

    Raises :class:`ConfigError` saying what is wrong and how to fix it, or
    :class:`~mmstream.errors.StorageError` if the operating system fails us.
    """
    path = Path(os.path.abspath(directory))  # absolute, but a symlink is not resolved away
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        with os_errors("creating cache directory", path):
            os.makedirs(path, mode=0o700)
        fsync_directory(path)
        with os_errors("checking cache directory", path):
            st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"cache.directory {path}: cannot be checked: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            f"cache.directory {path} is a symlink; refusing to follow it "
            f"(set cache.directory to the real directory, {os.path.realpath(path)})"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cache.directory {path} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"cache.directory {path} is owned by uid {st.st_uid}, not by this user "
            f"(uid {os.geteuid()}); use a directory of your own"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"cache.directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 700 {path}"
        )
    return path


def lock_cache_directory(directory: Path) -> int:
    """Take the directory's exclusive lock and return its descriptor (close it to release).

    Raises :class:`ConfigError` naming the directory if another process holds it."""
    with os_errors("opening cache directory", directory):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            raise ConfigError(
                f"cache.directory {directory} is in use by another mmstream server; stop it "
                "or choose another directory"
            ) from None
        raise ConfigError(
            f"cache.directory {directory}: cannot be locked: {exc.strerror}"
        ) from None
    return fd
