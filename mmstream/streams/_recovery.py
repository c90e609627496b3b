"""Rebuilding every stream from the cache directory when a manager starts.

What is found, and what happens to it (each case is logged with the stream id):

==========================================  ===============================================
found                                       outcome
==========================================  ===============================================
sidecar READY, data length == its size      READY, readable byte-identical
sidecar READY, any other data length        ERROR (quarantined: files kept, not served)
sidecar UPLOADING, data >= durable offset   UPLOADING at the end its checksum record
                                            proves intact (``<id>.sum``, see
                                            ``_checksums``), else at the durable offset;
                                            the data file is cut back to that size, so no
                                            unproven byte is ever served or kept
sidecar UPLOADING, data < durable offset    ERROR (bytes that were made durable are gone)
sidecar ERROR                               ERROR, as recorded
sidecar unreadable, malformed, of another   ERROR (quarantined; the operator inspects it,
version or naming another id                ``delete`` removes both files)
sidecar without data file                   ERROR (quarantined)
data file without sidecar                   removed (with its ``.sum``): the sidecar is the
                                            commit record, so this is a create or delete
                                            that never finished
``<id>.sum`` of a READY stream              removed (a finalize that stopped just after
                                            its commit)
``<id>.json.tmp``, ``mmstream.journal.tmp``  removed (an interrupted sidecar or journal
                                            write)
an entry in ``mmstream.journal``            applied over an UPLOADING sidecar of the same
                                            stream (``generation``): its durable
                                            offset, or READY with its sha256
``<id>.idx`` (arrival times)                kept with its stream (checked at first use,
                                            see :mod:`._timeindex`); removed without one
a symlink or non-regular file               never followed; ERROR for its stream
any other name                              ignored, logged
==========================================  ===============================================

Quarantine never rewrites the files, so the same verdict is reached at every start until
the stream is deleted. A READY stream's length is checked, not its sha256: hashing every READY
stream at start would make start-up time proportional to the cache size. Only an upload's
bytes since its last commit but one are hashed, to keep them.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import defaultdict
from pathlib import Path

import attrs

from ..cache import CacheFactory, CacheOptions, os_errors
from ..errors import StorageError
from ._checksums import open_checksum, verified_end
from ._context import StreamContext, StreamStatus, legacy_generation
from ._directory import (
    DATA_SUFFIX,
    INDEX_SUFFIX,
    SIDECAR_SUFFIX,
    SUM_SUFFIX,
    checksum_path,
    data_path,
    sidecar_path,
)
from ._ids import is_valid_stream_id
from ._journal import JOURNAL_NAME, JournalEntry, read_journal
from ._sidecar import TMP_SUFFIX, SidecarError, SidecarRecord, read_sidecar
from ._titles import TITLES_SUFFIX, read_titles, titles_path

__all__ = ["recover_directory"]

log = logging.getLogger("mmstream.streams")

_TRUNCATE_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


def recover_directory(
    directory: Path, factory: CacheFactory, options: CacheOptions
) -> list[StreamContext]:
    """Blocking (run it in a worker thread): one context per stream found, sorted by id."""
    found: defaultdict[str, set[str]] = defaultdict(set)
    indexes: list[str] = []
    with os_errors("listing cache directory", directory), os.scandir(directory) as entries:
        names = [entry.name for entry in entries]
    journal = read_journal(directory) if JOURNAL_NAME in names else {}
    for name in names:
        if name == JOURNAL_NAME:
            continue
        if name == JOURNAL_NAME + TMP_SUFFIX:
            log.warning("removing %s: an interrupted journal write", name)
            _remove(directory / name)
            continue
        stem, dot, suffix = name.partition(".")
        if dot and is_valid_stream_id(stem):
            if "." + suffix in (DATA_SUFFIX, SIDECAR_SUFFIX, SUM_SUFFIX):
                found[stem].add("." + suffix)
                continue
            if "." + suffix == INDEX_SUFFIX:
                indexes.append(stem)
                continue
            if "." + suffix == TITLES_SUFFIX:
                continue  # read with its stream; a stream's create removes an orphan
            if "." + suffix == SIDECAR_SUFFIX + TMP_SUFFIX:
                log.warning("removing %s: an interrupted sidecar write", name)
                _remove(directory / name)
                continue
        log.warning("ignoring %s in the cache directory: not a stream file", name)
    for stem in indexes:
        if SIDECAR_SUFFIX not in found.get(stem, ()):
            _remove(directory / (stem + INDEX_SUFFIX))  # its stream is gone
    streams = []
    for stream_id in sorted(found):
        entry = journal.get(stream_id)
        ctx = _recover_one(directory, stream_id, found[stream_id], entry, factory, options)
        if ctx is not None:
            ctx.titles = read_titles(titles_path(ctx.sidecar_path), ctx.generation)
            streams.append(ctx)
    return streams


def _recover_one(
    directory: Path,
    stream_id: str,
    suffixes: set[str],
    entry: JournalEntry | None,
    factory: CacheFactory,
    options: CacheOptions,
) -> StreamContext | None:
    data, sidecar = data_path(directory, stream_id), sidecar_path(directory, stream_id)
    sums = checksum_path(directory, stream_id)
    if SIDECAR_SUFFIX not in suffixes:
        log.warning("stream %s: files without sidecar (create or delete interrupted); "
                    "removing them", stream_id)  # fmt: skip
        _remove(data)
        _remove(sums)
        return None
    try:
        record = read_sidecar(sidecar)
    except OSError as exc:
        return _quarantine(directory, stream_id, None, f"sidecar unreadable: {exc.strerror}")
    except SidecarError as exc:
        return _quarantine(directory, stream_id, None, f"sidecar malformed: {exc}")
    if record.stream_id != stream_id:
        return _quarantine(directory, stream_id, None, "sidecar names another stream")
    if record.status is StreamStatus.ERROR:
        return _quarantine(directory, stream_id, record, record.error or "recorded as error")
    recorded = (record.status, record.durable_offset)
    if (
        entry is not None
        and entry.generation == record.generation
        and record.status is StreamStatus.UPLOADING
    ):
        record = attrs.evolve(
            record,
            status=entry.status,
            durable_offset=max(entry.durable_offset, record.durable_offset),
            sha256=entry.sha256,
            finalized_at=entry.finalized_at,
        )
    if DATA_SUFFIX not in suffixes:
        return _quarantine(directory, stream_id, record, "data file missing")
    try:
        st = os.lstat(data)
    except OSError as exc:
        return _quarantine(directory, stream_id, record, f"data file: {exc.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return _quarantine(directory, stream_id, record, "data file is not a regular file")
    durable = record.durable_offset
    if record.status is StreamStatus.READY and st.st_size != durable:
        return _quarantine(directory, stream_id, record,
                           f"data file is {st.st_size} bytes, sidecar says {durable}")  # fmt: skip
    if st.st_size < durable:
        return _quarantine(directory, stream_id, record,
                           f"data file is {st.st_size} bytes, below the durable "
                           f"offset {durable}")  # fmt: skip
    if record.status is StreamStatus.READY:
        if SUM_SUFFIX in suffixes:
            _remove(sums)
        base, end, crc = durable, durable, 0
    else:
        try:
            base, end, crc = verified_end(sums, data, durable)
        except OSError as exc:
            return _quarantine(directory, stream_id, record, f"data file: {exc.strerror}")
    cache = factory(data, options)
    try:
        if st.st_size > end:
            _cut_back(data, end)
        cache.open()
        if record.status is StreamStatus.UPLOADING:
            checksum = open_checksum(sums, create=False, base=base, end=end, crc=crc)
    except StorageError as exc:
        if cache.is_open:
            cache.close()
        return _quarantine(directory, stream_id, record, f"cannot open its files: {exc}")
    ctx = record.to_context(directory, cache)
    ctx.reserved = cache.size
    ctx.recorded = recorded  # what the sidecar says: the journal keeps the rest until then
    if record.status is StreamStatus.UPLOADING:
        ctx.size, ctx.checksum = end, checksum
    kept = (
        f" ({end - durable} bytes past the durable offset proven intact)" if end > durable else ""
    )
    log.info("stream %s: recovered %s at %d bytes%s", stream_id, record.status.value, end, kept)
    return ctx


def _quarantine(
    directory: Path, stream_id: str, record: SidecarRecord | None, reason: str
) -> StreamContext:
    log.error("stream %s: quarantined (error): %s", stream_id, reason)
    data = data_path(directory, stream_id)
    try:
        st = os.lstat(data)
    except OSError:
        reserved, mtime = 0, 0.0
    else:
        reserved, mtime = st.st_size, st.st_mtime
    if record is None:
        ctx = StreamContext(
            stream_id=stream_id,
            data_path=data,
            sidecar_path=sidecar_path(directory, stream_id),
            cache=None,
            status=StreamStatus.ERROR,
            created_at=mtime,
            last_accessed_at=mtime,
            # Stable while the files are: the same stat at every start until it is deleted.
            generation=legacy_generation(stream_id, mtime),
        )
    else:
        ctx = record.to_context(directory, None)
        ctx.size = ctx.durable_offset = 0  # nothing of a quarantined stream is served
        ctx.status = StreamStatus.ERROR
    ctx.error = reason
    ctx.reserved = reserved
    return ctx


def _cut_back(path: Path, size: int) -> None:
    """Truncate an upload to what is proven: bytes past its durable offset that its checksum
    record does not cover may be torn and must not be served or resumed from.

    No fsync here: if the truncation is lost, the next recovery cuts back again, and the
    next durable offset recorded for the stream comes after a flush that syncs the file.
    """
    with os_errors("cutting back", path):
        fd = os.open(path, _TRUNCATE_FLAGS)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a leftover we cannot remove must not stop the start-up
        log.warning("cannot remove %s: %s", path, exc.strerror)
