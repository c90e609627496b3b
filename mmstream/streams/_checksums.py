"""The checksum record ``<id>.sum``: what lets a restart keep an upload's bytes past its
durable offset.

An acknowledged byte is in the page cache; it survives a crash of the server process, not
a power cut. After a restart nothing tells the two apart, so without more the only safe
choice is to cut every upload back to its durable offset, losing up to a durability round of
acknowledged bytes. Like Kafka's log recovery, the bytes are kept when they can be shown
intact: every append batch updates a running CRC-32 of the stream's bytes from a *base*
offset (at or below the durable offset) and overwrites one 28-byte record ``(base, end,
crc)`` at the start of the stream's ``.sum`` file, before the append returns (so before any
ack of it). The record is never fsynced.

At recovery the record is checked (its own CRC, ``base <= durable offset <= end <= the data
file's length``) and the data ``[base, end)`` is hashed: if it matches, the upload comes back
at ``end``; otherwise at its durable offset. After a process crash the kernel still holds
both files' pages, so the record matches; after a power cut a missing or torn record or
torn data fails the check and the bytes past the durable offset are cut, as before.

The base moves up to a flush's target once that flush is committed: while the flush runs, a
second running CRC starts at its target, so hashing at recovery covers at most the bytes
written since the last commit but one (about two durability rounds), never the whole stream.
The write path pays one CRC pass over the bytes and one small ``pwrite`` per batch
(docs/reliability.md has the figures). The CRC is ISA-L's (``isal``): the same CRC-32 as
zlib's, so records stay readable either way, and many times faster, which counts when a
64 KiB upload's whole server cost is set beside a server that discards (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import attrs
from isal.isal_zlib import crc32

from ..cache import Buffer, MiB, os_errors

__all__ = ["RunningChecksum", "open_checksum", "verified_end"]

_MAGIC = b"MMC1"
_BODY = struct.Struct("<4sQQI")
_RECORD = struct.Struct("<24sI")
RECORD_SIZE = _RECORD.size
_HASH_CHUNK = 1 * MiB

_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def encode_record(base: int, end: int, crc: int) -> bytes:
    body = _BODY.pack(_MAGIC, base, end, crc)
    return _RECORD.pack(body, crc32(body))


def decode_record(raw: bytes) -> tuple[int, int, int] | None:
    """``(base, end, crc)``, or None for a missing, short or torn record."""
    if len(raw) < RECORD_SIZE:
        return None
    body, seal = _RECORD.unpack_from(raw)
    if crc32(body) != seal:
        return None
    magic, base, end, crc = _BODY.unpack(body)
    if magic != _MAGIC or base > end:
        return None
    return base, end, crc


@attrs.define(eq=False)
class RunningChecksum:
    """One upload's running CRC and its open ``.sum`` file. Only the manager uses it, on the
    event loop (appends) and under the stream's sync lock (flush marks and settles)."""

    fd: int
    #: The CRC covers ``[base, end)``; ``end`` is the stream's written size.
    base: int
    end: int
    crc: int = 0
    #: A flush in progress: its target, and the CRC of ``[next_base, end)``.
    next_base: int | None = None
    next_crc: int = 0

    def add(self, data: Buffer) -> None:
        """``data`` was written at ``end``."""
        self.crc = crc32(data, self.crc)
        if self.next_base is not None:
            self.next_crc = crc32(data, self.next_crc)
        self.end += memoryview(data).nbytes

    def record(self, path: Path) -> None:
        """Overwrite the record with the current CRC (into the page cache: no sync)."""
        with os_errors("writing checksum record", path):
            os.pwrite(self.fd, encode_record(self.base, self.end, self.crc), 0)

    def mark(self) -> None:
        """A flush of everything written so far begins."""
        self.next_base, self.next_crc = self.end, 0

    def settle(self, durable: int) -> None:
        """The flush ended and ``durable`` is the committed durable offset: if it reached the
        mark, the CRC restarts there; otherwise the old base stays."""
        if self.next_base is not None and self.next_base == durable:
            self.base, self.crc = self.next_base, self.next_crc
        self.next_base = None

    def invalidate(self) -> None:
        """The stream failed (a write or flush error): its bytes past the durable offset
        must not be trusted after a restart, whatever the page cache holds (the lesson of
        "fsyncgate": after a failed flush, cached pages may differ from the disk)."""
        with contextlib.suppress(OSError):  # already failing; recovery then finds a bad record
            os.pwrite(self.fd, bytes(RECORD_SIZE), 0)

    def close(self) -> None:
        os.close(self.fd)


def open_checksum(path: Path, *, create: bool, base: int, end: int, crc: int) -> RunningChecksum:
    """Open (or, with ``create``, create: never an existing file) a stream's ``.sum`` file."""
    with os_errors("opening checksum file", path):
        fd = os.open(path, _CREATE_FLAGS if create else _OPEN_FLAGS, 0o600)
    return RunningChecksum(fd=fd, base=base, end=end, crc=crc)


def verified_end(sum_path: Path, data_path: Path, durable: int) -> tuple[int, int, int]:
    """Recovery: ``(base, end, crc)`` of the bytes the record proves intact, or
    ``(durable, durable, 0)`` when it proves nothing (blocking: call it in a worker thread).
    ``OSError`` reading the data file propagates; a record that cannot be read proves
    nothing."""
    nothing = (durable, durable, 0)
    try:
        fd = os.open(sum_path, _READ_FLAGS)
    except OSError:
        return nothing
    try:
        raw = os.pread(fd, RECORD_SIZE, 0)
    except OSError:
        return nothing
    finally:
        os.close(fd)
    record = decode_record(raw)
    if record is None:
        return nothing
    base, end, crc = record
    if not base <= durable <= end or end == durable:
        return nothing
    fd = os.open(data_path, _READ_FLAGS)
    try:
        if os.fstat(fd).st_size < end:
            return nothing
        found = 0
        for offset in range(base, end, _HASH_CHUNK):
            found = crc32(os.pread(fd, min(_HASH_CHUNK, end - offset), offset), found)
    finally:
        os.close(fd)
    return record if found == crc else nothing
