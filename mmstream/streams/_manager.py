"""StreamManager: the one owner of every stream, and the only way the server touches storage.

Concurrency: one writer per stream. A writer that outlives one call (an upload binding, an
Icecast source) holds the stream's :class:`WriterLease` (:meth:`StreamManager.acquire_writer`),
and appends or finalize with another lease or none are refused with ``busy`` meanwhile;
each call holds the stream's write lock (``append``, ``finalize`` and ``delete``). Any number
of readers (no lock). Short operations run inline on the event loop
(a write that fits the reservation, a read of at most 1 MiB: a copy into or out of the page
cache costs less than a thread hop); growth, large copies, fsync and hashing run in worker
threads, so a slow disk never stalls the loop.

Durability: ``size`` (the written offset) is what was acknowledged; ``durable_offset`` is
what a successful flush made durable and the sidecar records. ``sync_policy`` decides when
flushes happen: after every append (``always``), every ``sync_interval`` seconds for streams
with unflushed bytes (``interval``), or at finalize only (``finalize``); closing the manager
flushes every stream whatever the policy. A failed flush is never retried into a false
success: the stream goes to ERROR, the caller gets :class:`StorageError`, and every later
write, flush or finalize is refused. The ERROR is kept in memory only; the sidecar keeps the
last durable record, so after a restart the upload resumes at the offset that was really
made durable.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import attrs
import trio

from .._locks import acquire
from ..audio import HEAD_SIZE, is_wav_content_type, wav_repairs
from ..cache import (
    Buffer,
    CacheFactory,
    KiB,
    MemoryMappedCache,
    MiB,
    check_read,
    check_size,
    check_write,
    fsync_directory,
    grown_size,
)
from ..config import CacheConfig
from ..errors import (
    CacheClosedError,
    ChecksumMismatchError,
    InvalidArgumentError,
    MmstreamError,
    NoSpaceError,
    OffsetConflictError,
    QuotaExceededError,
    StorageError,
    StreamBusyError,
    StreamChangedError,
    StreamExistsError,
    StreamNotFoundError,
    TooLargeError,
)
from ..metrics import Metrics
from ..registry import BackendRegistry
from ._checksums import open_checksum
from ._commit import CommitStatistics, GroupCommit
from ._context import MAX_TITLE_LENGTH, StreamContext, StreamInfo, StreamStatus, Title, WriterLease
from ._directory import (
    data_path,
    index_path,
    lock_cache_directory,
    prepare_cache_directory,
    sidecar_path,
)
from ._ids import check_stream_id
from ._journal import committed_state, entry_of, journal_capacity, remove_journal, write_journal
from ._recovery import recover_directory
from ._sidecar import SidecarRecord, write_sidecar, write_sidecars
from ._tiering import StreamTier
from ._timeindex import Seek, TimeIndex, TimeIndexes
from ._titles import MAX_TITLES, remove_titles, titles_path, write_titles

__all__ = ["DEFAULT_CONTENT_TYPE", "StreamManager", "open_stream_manager"]

log = logging.getLogger("mmstream.streams")

DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: Writes that fit the reservation and reads up to this size run inline on the event loop.
INLINE_WRITE_LIMIT = 1 * MiB
INLINE_READ_LIMIT = 1 * MiB
#: Followers' shared reads kept per stream (one size at a time), and the largest one kept.
SHARED_READS = 16
SHARED_READ_LIMIT = 256 * KiB
HASH_CHUNK = 1 * MiB
#: A finalize hashes up to this many bytes inline (a short clip: well under a millisecond),
#: so finalizes arriving together reach the group commit together.
INLINE_HASH_LIMIT = 256 * KiB
#: A group commit flushes its streams' data in up to this many worker threads at once.
FLUSH_THREADS = 8
#: Reservations are whole blocks, so the quota bounds the blocks the file system allocates.
BLOCK = 4096
#: A read updates ``last_accessed_at`` in memory only; the housekeeping loop records it in
#: the sidecar once it is this many seconds newer than the recorded one (and shutdown records
#: every change), so LRU order survives a restart to within a minute at one sidecar write per
#: stream per minute at most.
ACCESS_RECORD_INTERVAL = 60.0
MAX_CONTENT_TYPE_LENGTH = 255
MAX_METADATA_ITEMS = 64
MAX_METADATA_KEY_LENGTH = 128
MAX_METADATA_VALUE_LENGTH = 1024

_CONTENT_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class StreamManager:
    """Create, append to, read, follow, finalize and delete streams in one cache directory.

    Obtain one with :func:`open_stream_manager`, which recovers the directory and runs the
    background sync; the constructor is for that function.
    """

    def __init__(
        self,
        config: CacheConfig,
        factory: CacheFactory,
        directory: Path,
        streams: builtins.list[StreamContext],
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._factory = factory
        self._options = config.options()
        self._directory = directory
        self._streams: dict[str, StreamContext] = {ctx.stream_id: ctx for ctx in streams}
        #: Streams whose files are being created: they hold a quota claim and their id.
        self._creating: dict[str, StreamContext] = {}
        self._closed = False
        self._group: GroupCommit[_Commit] = GroupCommit(self._commit)
        self._tier: StreamTier | None = None
        #: Told of every append (arrival times); builds media time lazily, on a seek.
        self._times = TimeIndexes(directory, config.time_indexes)
        #: Title records are rewritten whole: one at a time, so the newest is the one left.
        self._titles_lock = trio.Lock()

    @property
    def config(self) -> CacheConfig:
        return self._config

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def reserved(self) -> int:
        """Bytes reserved on disk by every stream, in whole blocks (a finalized stream's
        last partial block is allocated all the same): the figure the quota applies to."""
        return sum(_blocks(ctx.reserved) for ctx in self._streams.values()) + sum(
            _blocks(ctx.reserved) for ctx in self._creating.values()
        )

    # -- lookups ---------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise CacheClosedError("the stream manager is closed")

    def _get(self, stream_id: object, generation: str | None = None) -> StreamContext:
        """The stream named ``stream_id``; with ``generation``, only if it is still that
        stream (not one created under the same id after a delete): the one place that
        checks a stream's identity (see :mod:`._context`)."""
        sid = check_stream_id(stream_id)
        self._require_open()
        try:
            ctx = self._streams[sid]
        except KeyError:
            raise StreamNotFoundError(f"no stream {sid}") from None
        if generation is not None and ctx.generation != generation:
            raise StreamChangedError(
                f"stream {sid} (generation {generation}) was deleted; the id now names "
                f"another stream (generation {ctx.generation})"
            )
        return ctx

    def _require_live(self, ctx: StreamContext) -> None:
        """After waiting for a lock: the stream may have been deleted or the manager closed."""
        self._require_open()
        if ctx.deleted:
            raise StreamNotFoundError(f"stream {ctx.stream_id} was deleted")

    def _require_new(self, sid: str) -> None:
        if sid in self._streams or sid in self._creating:
            raise StreamExistsError(f"stream {sid} already exists")

    def stat(
        self, stream_id: str, *, generation: str | None = None, times: bool = False
    ) -> StreamInfo:
        """The stream's snapshot; with ``times`` (the ``stat`` request's answer), its
        duration and start time too, from what its time index holds (never parsing:
        :meth:`TimeIndex.known_duration`; the index's marks are read from disk on first use)."""
        ctx = self._get(stream_id, generation)
        if not times:
            return ctx.info()
        index = self._times.get(ctx.stream_id, ctx.generation, ctx.created_at, ctx.size)
        live = ctx.status is StreamStatus.UPLOADING
        return attrs.evolve(
            ctx.info(),
            duration=index.known_duration(ctx.size, live),
            started_at=index.start_wall,
        )

    def commit_statistics(self) -> CommitStatistics:
        """Group commits run so far, and the flushes and finalizes they carried."""
        return self._group.statistics()

    def list(self) -> builtins.list[StreamInfo]:
        """Every stream, sorted by id."""
        self._require_open()
        return [self._streams[sid].info() for sid in sorted(self._streams)]

    # -- the object-storage tier (docs/tiering.md) -----------------------------------------

    def attach_tier(self, tier: StreamTier) -> None:
        """Tell ``tier`` of every READY stream now and of each stream finalized or deleted
        from now on."""
        self._require_open()
        self._tier = tier
        for ctx in self._streams.values():
            if ctx.status is StreamStatus.READY and not ctx.tiered:
                tier.stream_ready(ctx.info())

    def mark_tiered(self, stream_id: str, *, generation: str) -> StreamInfo:
        """Record that the tier holds a byte-identical copy of this generation of the stream:
        ``stat`` says ``local+remote``, and eviction takes it before streams held only here."""
        ctx = self._get(stream_id, generation)
        ctx.tiered = True
        return ctx.info()

    async def find(self, stream_id: str) -> StreamInfo:
        """:meth:`stat`, except that a stream this node does not hold is looked for in the
        tier: any node serves any tiered stream. Found there, it is kept as a ``remote``
        stream (reads go to the bucket). Without a tier, exactly :meth:`stat`."""
        sid = check_stream_id(stream_id)
        self._require_open()
        if self._tier is None or sid in self._streams or sid in self._creating:
            await trio.lowlevel.checkpoint()
            return self.stat(sid)
        info = await self._tier.lookup(sid)
        self._require_open()
        if info is not None and sid not in self._streams and sid not in self._creating:
            ctx = StreamContext(
                stream_id=sid,
                data_path=data_path(self._directory, sid),
                sidecar_path=sidecar_path(self._directory, sid),
                cache=None,
                status=StreamStatus.READY,
                created_at=info.created_at,
                last_accessed_at=time.time(),
                content_type=info.content_type,
                metadata=dict(info.metadata),
                size=info.size,
                durable_offset=info.size,
                finalized_at=info.finalized_at,
                sha256=info.sha256,
                generation=info.generation,
            )
            ctx.tiered = ctx.remote = True
            ctx.recorded = (StreamStatus.READY, info.size)  # no sidecar, and none lags
            self._streams[sid] = ctx
            log.info("stream %s: found in the bucket (%d bytes)", sid, info.size)
        return self.stat(sid)

    async def restore(self, stream_id: str, *, generation: str) -> StreamInfo:
        """Bring a remote stream back into the cache (the tier calls this for a stream read
        again): reserve its blocks (evicting as a write would), fetch it into a new data
        file, verify it, and write the sidecar last, so a crash leaves at most a data file
        without a sidecar, which recovery removes. Raises :class:`QuotaExceededError` if
        it does not fit."""
        ctx = self._get(stream_id, generation)
        tier = self._tier
        async with ctx.write_lock, ctx.sync_lock:
            self._require_live(ctx)
            if not ctx.remote or tier is None:
                return ctx.info()
            needed = _blocks(ctx.size)
            room = self._room(ctx)
            if needed > room and self._config.on_full == "evict":
                await self._reclaim(needed - room, keep=ctx)
                room = self._room(ctx)
            if needed > room:
                raise QuotaExceededError(
                    f"stream {ctx.stream_id} ({ctx.size} bytes) does not fit the cache now"
                )
            ctx.reserved = needed  # claimed before the first await: claims add up
            cache = self._factory(ctx.data_path, self._options)
            try:
                await trio.to_thread.run_sync(cache.create, needed)
                await tier.fetch(ctx.info(), cache.write)
                record = SidecarRecord.of(ctx)
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(cache.finalize, ctx.size)
                    await trio.to_thread.run_sync(write_sidecar, ctx.sidecar_path, record)
            except BaseException:
                ctx.reserved = 0
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_discard, cache, ctx.data_path)
                raise
            ctx.cache, ctx.remote, ctx.remote_reads = cache, False, 0
            ctx.reserved = cache.size
            ctx.access_recorded = record.last_accessed_at
            ctx.recorded = (record.status, record.durable_offset)
            log.info("stream %s: brought back from the bucket (%d bytes)", ctx.stream_id,
                     ctx.size)  # fmt: skip
            return ctx.info()

    # -- create ----------------------------------------------------------------------------

    async def create(
        self,
        stream_id: str,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        size_hint: int | None = None,
    ) -> StreamInfo:
        """Create an empty UPLOADING stream, reserving ``initial_size`` (or what the quota
        leaves, maybe nothing: see :meth:`_initial_reservation`) on disk. It exists once its
        sidecar is durable.

        ``size_hint``, the size the caller expects the stream to reach (a clip's, a file's),
        makes the reservation that small when it is below ``initial_size``: a 16 KiB clip
        does not reserve (and zero) 64 MiB. Growth covers a hint that was too small."""
        sid = check_stream_id(stream_id)
        initial: int = self._config.initial_size
        if size_hint is not None:
            check_size("size_hint", size_hint)
            initial = max(BLOCK, min(initial, size_hint))
        content_type = _check_content_type(content_type)
        meta = _check_metadata(metadata)
        self._require_open()
        await trio.lowlevel.checkpoint()
        self._require_new(sid)
        reservation = self._initial_reservation(initial)
        path = data_path(self._directory, sid)
        now = time.time()
        ctx = StreamContext(
            stream_id=sid,
            data_path=path,
            sidecar_path=sidecar_path(self._directory, sid),
            cache=self._factory(path, self._options),
            status=StreamStatus.UPLOADING,
            created_at=now,
            last_accessed_at=now,
            content_type=content_type,
            metadata=meta,
            reserved=reservation,
        )
        self._creating[sid] = ctx
        try:
            await trio.to_thread.run_sync(_create_files, ctx, ctx.reserved)
        except StorageError as exc:
            if exc.errno == errno.EEXIST:
                raise StreamExistsError(
                    f"a file for stream {sid} already exists in the cache directory"
                ) from exc
            raise
        finally:
            del self._creating[sid]
        cache = _open_cache(ctx)
        if self._closed:  # closed while the files were being made: the stream is on disk
            cache.close()
            raise CacheClosedError("the stream manager is closed")
        ctx.reserved = cache.size
        ctx.access_recorded = now
        self._streams[sid] = ctx
        log.info("stream %s: created (uploading, %d bytes reserved)", sid, ctx.reserved)
        return ctx.info()

    # -- titles ----------------------------------------------------------------------------

    async def set_title(self, stream_id: str, title: str) -> Title:
        """Record ``title`` as the live stream's current one, beginning at its size now
        (Icecast's ``/admin/metadata``); the current title again changes nothing. Only an
        UPLOADING stream has a "now". The newest
        :data:`~._titles.MAX_TITLES` are kept, in ``<id>.titles`` beside the sidecar."""
        if not isinstance(title, str):
            raise InvalidArgumentError("a title must be a string")
        if len(title) > MAX_TITLE_LENGTH:
            raise TooLargeError(f"a title is at most {MAX_TITLE_LENGTH} characters")
        ctx = self._get(stream_id)
        ctx.require_writable()
        if ctx.titles and ctx.titles[-1].title == title:
            return ctx.titles[-1]  # no change (MPD sends each title twice): no new entry
        entry = Title(title, ctx.size, time.time())
        ctx.titles = (*ctx.titles, entry)[-MAX_TITLES:]
        async with self._titles_lock:
            self._require_live(ctx)
            await trio.to_thread.run_sync(
                write_titles, titles_path(ctx.sidecar_path), ctx.generation, ctx.titles
            )
        log.info("stream %s: title at %d: %r", ctx.stream_id, entry.offset, title[:80])
        return entry

    def current_title(self, stream_id: str, *, generation: str | None = None) -> str | None:
        """The stream's title now (the newest :meth:`set_title`), None before any: what a
        source's Ogg chainer asks with every piece it is fed, so it is read where the
        titles are held, without the snapshot :meth:`stat` builds."""
        titles = self._get(stream_id, generation).titles
        return titles[-1].title if titles else None

    # -- writers ---------------------------------------------------------------------------

    def acquire_writer(self, stream_id: str, owner: str) -> WriterLease:
        """Become the stream's one writer, whatever the route: until the lease is released,
        appends and finalize that do not pass it are refused with :class:`StreamBusyError`.

        A lease held by a writer that wrote nothing for ``writer_timeout`` seconds is taken
        over (its next write is refused): a connection that died without the server
        noticing holds its stream that long at most, and a resumed upload can go on.
        Otherwise the second writer gets :class:`StreamBusyError` and the first is
        untouched. Raises as ``append`` would for a missing or finished stream."""
        ctx = self._get(stream_id)
        ctx.require_writable()
        current = ctx.writer
        if current is not None:
            idle = time.monotonic() - max(current.acquired_at, ctx.idle_since)
            if idle < self._config.writer_timeout:
                log.info("stream %s: %s refused, %s is writing it", ctx.stream_id, owner,
                         current.owner)  # fmt: skip
                raise StreamBusyError(
                    f"stream {ctx.stream_id} has another writer; retry once it ends (or has "
                    f"sent nothing for {self._config.writer_timeout:g} s, if its connection died)"
                )
            log.warning("stream %s: writer %s idle for %.1f s, taken over by %s",
                        ctx.stream_id, current.owner, idle, owner)  # fmt: skip
        lease = WriterLease(ctx.stream_id, owner, ctx)
        ctx.writer = lease
        return lease

    @staticmethod
    def _require_writer(ctx: StreamContext, writer: WriterLease | None) -> None:
        """A lease of a stream deleted since never gets here: its callers look the stream up
        with the lease's generation (``_get``), which answers ``stream-changed`` first."""
        if ctx.writer is writer:
            return
        if writer is None:
            raise StreamBusyError(f"stream {ctx.stream_id} has another writer")
        raise StreamBusyError(
            f"stream {ctx.stream_id} was taken over by another writer (this one was idle)"
        )

    # -- append ----------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        data: Buffer,
        *,
        expected_offset: int | None = None,
        writer: WriterLease | None = None,
    ) -> int:
        """Append ``data`` and return the new size. ``expected_offset``, when given, must
        equal the current size, else :class:`OffsetConflictError` carries the real one.
        ``writer`` must be the stream's lease if one is held (:meth:`acquire_writer`)."""
        return await self.append_many(
            stream_id, (data,), expected_offset=expected_offset, writer=writer
        )

    async def append_many(
        self,
        stream_id: str,
        chunks: Sequence[Buffer],
        *,
        expected_offset: int | None = None,
        writer: WriterLease | None = None,
    ) -> int:
        """Append ``chunks`` one after the other and return the new size: one lock, one
        offset check, one wakeup of the followers for the lot (the server's batch of the
        upload frames a connection has queued).

        The chunks are written in order; if one fails after others were written, the size
        after the last one written is returned (the caller sees it fell short and may
        append the rest again to learn why); an error is raised only when nothing was
        written, exactly as :meth:`append` would raise it for the first chunk.
        """
        # A writer's lease names the stream it was taken on: never another one created
        # under the same id since (StreamChangedError), as for readers.
        ctx = self._get(stream_id, writer.generation if writer is not None else None)
        try:
            views = [memoryview(data).cast("B") for data in chunks]
        except TypeError as exc:
            raise InvalidArgumentError(
                f"data must be a contiguous bytes-like object: {exc}"
            ) from None
        if expected_offset is not None:
            check_size("expected_offset", expected_offset)
        # No checkpoint when the lock is free: the hot path of every upload batch. The
        # caller's loop checkpoints (the server's session, once per batch it did not wait for).
        lock = ctx.write_lock
        await acquire(lock)
        try:
            self._require_live(ctx)
            ctx.require_writable()
            self._require_writer(ctx, writer)
            offset = ctx.size
            if expected_offset is not None and expected_offset != offset:
                raise OffsetConflictError(
                    f"stream {ctx.stream_id} has {offset} bytes, not {expected_offset}",
                    actual=offset,
                )
            count = sum(view.nbytes for view in views)
            started = time.perf_counter()
            if count:
                try:
                    await self._write_chunks(ctx, offset, views)
                except MmstreamError:
                    if ctx.size == offset:
                        raise
                finally:
                    self._appended(ctx, offset, started)
            ctx.last_accessed_at = time.time()
            ctx.idle_since = time.monotonic()
            if self._config.sync_policy == "always":
                async with ctx.sync_lock:
                    await self._flush_locked(ctx)
            return ctx.size
        finally:
            lock.release()

    def _appended(self, ctx: StreamContext, offset: int, started: float) -> None:
        """After a write from ``offset`` (begun at ``started``): record the checksum of the
        new bytes (before the caller can acknowledge them), wake the followers and count
        the bytes that landed."""
        if ctx.size > offset:
            checksum = ctx.checksum
            if checksum is not None:
                try:
                    checksum.record(ctx.checksum_path)
                except StorageError as exc:  # the bytes are written; a crash would cut them
                    self._fail(ctx, exc)
            if ctx.followers:  # nobody waits: no new event
                ctx.notify()
            self._times.appended(ctx.stream_id, ctx.generation, ctx.created_at, offset, ctx.size)
            if self._metrics is not None:
                self._metrics.observe_write(ctx.size - offset, time.perf_counter() - started)

    async def _write_chunks(
        self, ctx: StreamContext, offset: int, views: Sequence[memoryview]
    ) -> None:
        """Write ``views`` at ``offset`` on, advancing ``ctx.size`` as they land; the caller
        holds ``ctx.write_lock``. Consecutive chunks that fit the reservation are copied
        inline with one ``cache.write_batch`` (up to ``batch_limit`` of them): one lock and
        one set of checks in the backend for the server's whole batch of upload frames.
        A chunk that needs growth, or a large one, goes through a worker thread alone. If
        a batch fails, ``ctx.size`` stays where it began: its chunks count as unwritten."""
        cache = _open_cache(ctx)
        limit = self._options.batch_limit
        run: list[tuple[int, memoryview]] = []

        def write_run() -> None:
            try:
                if len(run) == 1:
                    cache.write(*run[0])
                else:
                    cache.write_batch(run)
            except StorageError as exc:
                self._fail(ctx, exc)
                raise
            last, view = run[-1]
            ctx.size = last + view.nbytes
            if ctx.checksum is not None:
                for _, written in run:
                    ctx.checksum.add(written)
            run.clear()

        for view in views:
            count = view.nbytes
            if not count:
                continue
            end = check_write(offset, count)
            inline = end <= cache.size and count <= INLINE_WRITE_LIMIT
            if run and (not inline or len(run) == limit):
                write_run()
            if inline:
                run.append((offset, view))
            else:
                await self._write_in_thread(ctx, cache, offset, view, end)
                ctx.size = end
                if ctx.checksum is not None:
                    ctx.checksum.add(view)
            offset = end
        if run:
            write_run()

    async def _write_in_thread(
        self, ctx: StreamContext, cache: MemoryMappedCache, offset: int, view: memoryview, end: int
    ) -> None:
        new_size = cache.size
        if end > new_size:
            wanted = _blocks(grown_size(new_size, end, self._options))
            room = await self._room_for(ctx, _blocks(end))
            new_size = min(wanted, max(end, room // BLOCK * BLOCK))
            ctx.reserved = new_size  # claimed before the thread runs: concurrent growths add up
        try:
            await trio.to_thread.run_sync(_grow_and_write, cache, new_size, offset, view)
        except NoSpaceError:
            raise  # nothing was written; the stream stays UPLOADING and may retry
        except StorageError as exc:
            self._fail(ctx, exc)
            raise
        finally:
            ctx.reserved = cache.size

    def _initial_reservation(self, initial_size: int) -> int:
        """What a new stream reserves: ``initial_size``, or what is free, in whole blocks.

        A reservation is speculative, so a create never evicts: with nothing free it
        reserves nothing, and its first write evicts what those bytes need (``on_full =
        "evict"``). Every UPLOADING stream claims at least one block (its first write's
        need), so streams that reserved nothing are bounded too: a create is refused with
        :class:`QuotaExceededError` unless its block is free or (``evict``) could be taken
        from READY streams not yet claimed by others. Synchronous: the caller claims the
        figure before any other task can."""
        free = self._config.max_cache_size - self._claimed()
        if free >= BLOCK:
            return min(_blocks(initial_size), free // BLOCK * BLOCK)
        if self._config.on_full == "evict":
            evictable = sum(_blocks(c.reserved) for c in self._evictable(keep=None))
            if free + evictable >= BLOCK:
                return 0
        raise QuotaExceededError(
            f"the cache is full: {self._config.max_cache_size - max(free, 0)} of "
            f"{self._config.max_cache_size} bytes are reserved or claimed by uploads"
        )

    def _claimed(self) -> int:
        """:attr:`reserved`, with every UPLOADING stream counted as one block at least."""
        return sum(
            max(_blocks(ctx.reserved), BLOCK if ctx.status.writable else 0)
            for streams in (self._streams, self._creating)
            for ctx in streams.values()
        )

    def _evictable(self, keep: StreamContext | None) -> builtins.list[StreamContext]:
        """READY streams not in use (nor ``keep``): tiered ones first, then the rest, each
        least recently accessed first."""
        return sorted(
            (
                c
                for c in self._streams.values()
                if c.status is StreamStatus.READY
                and c is not keep
                and not c.in_use
                and not c.remote
            ),
            # A tiered stream's bytes stay in the bucket: evict those first.
            key=lambda c: (not c.tiered, c.last_accessed_at),
        )

    async def _room_for(self, ctx: StreamContext, needed: int) -> int:
        """How large ``ctx``'s reservation may grow for a write that needs ``needed`` bytes
        reserved. Eviction (if ``on_full`` allows) makes room for those written bytes only,
        never for the rest of a geometric growth: READY data is not evicted to back a
        speculative reservation. Raise
        :class:`QuotaExceededError` if ``needed`` bytes do not fit under ``max_cache_size``.

        The figure is computed after the last checkpoint, so the caller claims it before any
        other task can: concurrent claims add up and never overshoot the quota together.
        """
        room = self._room(ctx)
        if needed > room:
            await self._reclaim(needed - room, keep=ctx)
        else:
            await trio.lowlevel.checkpoint()
        room = self._room(ctx)
        if needed > room:
            raise QuotaExceededError(
                f"the cache is full: {self._config.max_cache_size - room} of "
                f"{self._config.max_cache_size} bytes are reserved and {needed} are needed"
            )
        return room

    def _room(self, ctx: StreamContext) -> int:
        return self._config.max_cache_size - (self.reserved - _blocks(ctx.reserved))

    async def _reclaim(self, amount: int, *, keep: StreamContext) -> None:
        """Free ``amount`` reserved bytes for a write into ``keep``: first from reservations
        no byte was written into (other uploads' unwritten tails, the longest idle first,
        only what is needed: a reservation is speculative), then, with ``on_full =
        "evict"``, by deleting READY streams, least recently accessed first. A stream in use
        (read in a thread, held, followed, being written, finalized or deleted) is never
        evicted; if everything together cannot free ``amount``, nothing is done: losing data
        and then refusing the write anyway helps no one."""
        await trio.lowlevel.checkpoint()
        spares = self._spares(keep)
        candidates = self._evictable(keep) if self._config.on_full == "evict" else []
        available = sum(spare for _, spare in spares)
        if available + sum(_blocks(c.reserved) for c in candidates) < amount:
            return
        amount -= await self._trim(spares, amount)
        freed = 0
        for victim in candidates:
            if freed >= amount:
                break
            if victim.deleted or victim.in_use:  # changed while an earlier one was removed
                continue
            freed += _blocks(victim.reserved)
            removed = await self._remove(victim, "evicted (least recently used; the cache is full)")
            if removed and self._metrics is not None:
                self._metrics.evictions.inc()

    def _spares(self, keep: StreamContext) -> builtins.list[tuple[StreamContext, int]]:
        """Uploads (but ``keep``) with reserved blocks past their written ones, and how many:
        the longest idle first. One being written is left alone."""
        found = [
            (c, _blocks(c.reserved) - _blocks(c.size))
            for c in self._streams.values()
            if c.status.writable and c is not keep and not c.write_lock.locked()
        ]
        return sorted(
            ((c, spare) for c, spare in found if spare > 0), key=lambda item: item[0].idle_since
        )

    async def _trim(self, spares: Sequence[tuple[StreamContext, int]], amount: int) -> int:
        """Shrink the reservations of ``spares`` in turn, never below their written bytes,
        until ``amount`` bytes are free; return the bytes freed. A stream a writer took
        meanwhile is skipped; one whose shrink fails keeps what it has (a lost trim costs
        nothing but the room)."""
        freed = 0
        for ctx, _ in spares:
            if freed >= amount:
                break
            try:
                ctx.write_lock.acquire_nowait()
            except trio.WouldBlock:
                continue
            try:
                cache = ctx.cache
                if ctx.deleted or self._closed or not ctx.status.writable or cache is None:
                    continue
                before = _blocks(ctx.reserved)
                target = max(_blocks(ctx.size), before - _blocks(amount - freed))
                if target >= before:
                    continue
                try:
                    await trio.to_thread.run_sync(cache.resize, target)
                except StorageError as exc:
                    log.warning("stream %s: giving back unwritten space failed: %s",
                                ctx.stream_id, exc)  # fmt: skip
                finally:
                    ctx.reserved = cache.size
                freed += max(before - _blocks(ctx.reserved), 0)
            finally:
                ctx.write_lock.release()
        return freed

    # -- read and follow -------------------------------------------------------------------

    async def read(
        self, stream_id: str, offset: int, length: int, *, generation: str | None = None
    ) -> bytes:
        """Up to ``length`` bytes at ``offset``, clamped to the written size (``b""`` at the
        end); works while UPLOADING and once READY. A caller that reads a stream in pieces
        passes the ``generation`` of the stream it began with (from :meth:`stat` or
        :meth:`hold`): if the id names another stream now, :class:`StreamChangedError`.

        A read of at most ``INLINE_READ_LIMIT`` bytes is one copy from the page cache and
        does not checkpoint (the server's request loop does): a range read's round trip is a
        count of passes through the scheduler. A larger read runs in a thread."""
        return await self._read(self._get(stream_id, generation), offset, length)

    async def _read(self, ctx: StreamContext, offset: int, length: int) -> bytes:
        if ctx.remote:
            return await self._read_remote(ctx, offset, length)
        cache = ctx.require_readable()
        start, stop = check_read(offset, length, ctx.size)
        ctx.last_accessed_at = time.time()
        started = time.perf_counter()
        if stop - start <= INLINE_READ_LIMIT:
            data = cache.read(start, stop - start) if stop > start else b""
        else:
            ctx.readers += 1  # delete closes the backend only after this read is done
            try:
                data = await trio.to_thread.run_sync(cache.read, start, stop - start)
            finally:
                ctx.reader_done()
        if self._metrics is not None:
            self._metrics.observe_read(time.perf_counter() - started)
        return data

    async def _read_remote(self, ctx: StreamContext, offset: int, length: int) -> bytes:
        """A read of a stream whose bytes are only in the bucket; the second such read asks
        the tier to bring it back (a stream read again is hot)."""
        tier = self._tier
        if tier is None:
            raise StorageError(f"stream {ctx.stream_id} is in the bucket, and the tier is off")
        start, stop = check_read(offset, length, ctx.size)
        ctx.last_accessed_at = time.time()
        info = ctx.info()
        data = await tier.read(info, start, stop - start) if stop > start else b""
        ctx.remote_reads += 1
        if ctx.remote_reads == 2:
            tier.stream_hot(info)
        return data

    async def read_shared(
        self, stream_id: str, offset: int, length: int, *, generation: str | None = None
    ) -> bytes:
        """:meth:`read` for followers: every caller asking for the same range while the
        stream has the same size gets the same bytes object, read once (100 followers of a
        live stream wake together after each write and all want the new piece). Kept per
        size: at most ``SHARED_READS`` ranges of at most ``SHARED_READ_LIMIT`` bytes. The
        shared reads belong to one stream's context, so a stream created again under the
        same id (another generation) never gets the old one's."""
        await trio.lowlevel.checkpoint()
        ctx = self._get(stream_id, generation)
        size, reads = ctx.shared_reads
        key = (offset, length)
        if size == ctx.size and key in reads:
            if not ctx.remote:
                ctx.require_readable()
            return reads[key]
        size = ctx.size
        data = await self._read(ctx, offset, length)
        if ctx.size == size and len(data) <= SHARED_READ_LIMIT:
            if ctx.shared_reads[0] != size:
                ctx.shared_reads = (size, {})
            reads = ctx.shared_reads[1]
            if len(reads) < SHARED_READS:
                reads[key] = data
        return data

    async def wait_for_data(
        self, stream_id: str, offset: int, *, generation: str | None = None
    ) -> StreamInfo:
        """Return once the stream holds more than ``offset`` bytes or is no longer UPLOADING
        (READY: no more data will come; ERROR). Deletion raises :class:`StreamNotFoundError`;
        a ``generation`` that is no longer the id's, :class:`StreamChangedError`."""
        await trio.lowlevel.checkpoint()
        ctx = self._get(stream_id, generation)
        position = check_size("offset", offset)
        ctx.followers += 1
        try:
            while True:
                self._require_live(ctx)
                if ctx.size > position or not ctx.status.writable:
                    return ctx.info()
                # Taken before sleeping and replaced only by notify(): no wakeup is missed.
                await ctx.changed.wait()
        finally:
            ctx.followers -= 1

    @contextmanager
    def hold(self, stream_id: str, *, generation: str | None = None) -> Iterator[StreamInfo]:
        """Hold a stream for a read that spans many calls (an HTTP response, a ``read`` sent
        in frames): eviction and expiry skip it meanwhile, and a ``delete`` closes its
        backend only after the hold ends (later reads then raise
        :class:`StreamNotFoundError`, never touch an unmapped file). The reads pass the
        held stream's ``generation``: a stream created under the same id after the delete
        is another stream (:class:`StreamChangedError`)."""
        ctx = self._get(stream_id, generation)
        if not ctx.remote:  # a remote stream's reads go to the bucket
            ctx.require_readable()
        ctx.readers += 1
        try:
            yield ctx.info()
        finally:
            ctx.reader_done()

    # -- time ------------------------------------------------------------------------------

    async def seek(
        self,
        stream_id: str,
        *,
        seconds: float | None = None,
        at: float | None = None,
        generation: str | None = None,
    ) -> Seek:
        """Where to start reading for a time: ``seconds`` of media from the start (negative:
        back from the end, the live edge of an upload), or the wall clock ``at`` (Unix
        time). Clamped to the stream; the answer starts on a boundary a decoder can start
        at, and carries the header it needs first (see :mod:`._timeindex`)."""
        if (seconds is None) == (at is None):
            raise InvalidArgumentError("seek takes seconds or a wall-clock time, one of them")
        for value in (seconds, at):
            if value is not None and not -1e12 < value < 1e12:
                raise InvalidArgumentError(f"time {value!r} is out of range")
        async with self._indexed(stream_id, generation) as (index, read, size):
            if at is not None:
                seconds = index.seconds_at_wall(at)
            elif seconds is not None and seconds < 0:
                seconds = max(index.duration + seconds, 0.0)
            assert seconds is not None
            return index.seek(seconds, read, size)

    async def boundaries(
        self,
        stream_id: str,
        every: float,
        *,
        parts: int = 1,
        first: int = 0,
        generation: str | None = None,
    ) -> builtins.list[Seek]:
        """:meth:`seek` for ``k * every / parts``, from ``k = first`` up to the media time
        written so far (where HLS cuts its segments of ``every`` seconds, and each into
        ``parts`` parts): one build of the index for them all. A caller that keeps the
        answer asks only for the boundaries after it next time (``first``)."""
        if not 0.1 <= every <= 3600:
            raise InvalidArgumentError(f"segment duration {every!r} is out of range")
        if not 1 <= parts <= 100:
            raise InvalidArgumentError(f"parts per segment {parts!r} is out of range")
        async with self._indexed(stream_id, generation) as (index, read, size):
            found = []
            k, duration = max(first, 0), index.duration
            while k * every / parts <= duration:
                found.append(index.seek(k * every / parts, read, size))
                k += 1
            return found

    @asynccontextmanager
    async def _indexed(
        self, stream_id: str, generation: str | None
    ) -> AsyncIterator[tuple[TimeIndex, Callable[[int, int], bytes], int]]:
        """The stream's time index, built up to its current size (in a worker thread past
        ``INLINE_READ_LIMIT`` new bytes), its reader and that size; held locked. A stream
        held only in the bucket is brought back first: the index is built from the whole
        stream, and seeks and segments read it synchronously (docs/tiering.md)."""
        ctx = self._get(stream_id, generation)
        if ctx.remote:
            await self.restore(ctx.stream_id, generation=ctx.generation)
        cache = ctx.require_readable()
        index = self._times.get(ctx.stream_id, ctx.generation, ctx.created_at, ctx.size)
        async with index.lock:
            self._times.use_points(ctx.stream_id)
            size = ctx.size
            ctx.readers += 1  # delete closes the backend only after the build is done
            try:
                if size - index.position > INLINE_READ_LIMIT:
                    await trio.to_thread.run_sync(index.build, cache.read, size)
                else:
                    index.build(cache.read, size)
                yield index, cache.read, size
            finally:
                ctx.reader_done()

    async def offset_at(
        self, stream_id: str, seconds: float, *, generation: str | None = None
    ) -> int:
        """The offset :meth:`seek` starts at for ``seconds`` (the WebSocket ``time``)."""
        return (await self.seek(stream_id, seconds=seconds, generation=generation)).offset

    # -- durability ------------------------------------------------------------------------

    async def flush(self, stream_id: str) -> StreamInfo:
        """Make every written byte durable and record it: ``durable_offset == size`` after."""
        ctx = self._get(stream_id)
        async with ctx.sync_lock:
            self._require_live(ctx)
            await self._flush_locked(ctx)
        return ctx.info()

    async def _flush_locked(self, ctx: StreamContext) -> None:
        """Flush and record the durable offset; the caller holds ``ctx.sync_lock``."""
        if ctx.status is StreamStatus.ERROR:
            raise StorageError(f"stream {ctx.stream_id} is in error: {ctx.error}")
        if not ctx.status.writable or ctx.size == ctx.durable_offset:
            return  # READY streams were made durable by finalize
        request = self._commit_request(ctx)
        started = time.perf_counter()
        await self._group.submit([request])
        self._committed(request)
        if request.error is not None:
            raise request.error
        if self._metrics is not None:
            self._metrics.observe_fsync(time.perf_counter() - started)

    def _commit_request(
        self, ctx: StreamContext, ready: tuple[str, float] | None = None
    ) -> _Commit:
        """A flush (or, with ``ready``, a finalize) of everything written to ``ctx``; the
        caller holds its sync lock until :meth:`_committed`."""
        _open_cache(ctx)
        if ctx.checksum is not None:
            ctx.checksum.mark()
        return _Commit(ctx=ctx, target=ctx.size, ready=ready)

    def _committed(self, request: _Commit) -> None:
        """After the commit: settle the checksum and put a stream whose flush failed in
        ERROR (a full disk while writing the journal leaves it UPLOADING: its bytes are
        synced, only their record is not, and a later commit records them)."""
        ctx, error = request.ctx, request.error
        if ctx.checksum is not None:
            ctx.checksum.settle(ctx.durable_offset)
        if error is None:
            return
        if request.data_failed or request.ready is not None or not isinstance(error, NoSpaceError):
            self._fail(ctx, error)

    async def _commit(self, batch: builtins.list[_Commit]) -> None:
        """One group commit (see ``_commit``): flush or finalize the data of every request,
        spread over up to :data:`FLUSH_THREADS` worker threads (the file system joins
        concurrent syncs into one transaction; one thread syncing 1,000 files in turn waits
        for 1,000), then write the journal once with the state of every stream whose
        sidecar lags, the requests' new state included."""
        entries = {sid: entry_of(ctx) for sid, ctx in self._streams.items() if ctx.sidecar_lags}
        share = -(-len(batch) // FLUSH_THREADS)
        async with trio.open_nursery() as nursery:
            for start in range(0, len(batch), share):
                nursery.start_soon(
                    trio.to_thread.run_sync, _sync_data, batch[start : start + share]
                )
        synced = [request for request in batch if not request.data_failed]
        for request in synced:
            entries[request.ctx.stream_id] = request.entry()
        if synced:
            try:
                if len(entries) > journal_capacity():
                    await self._catch_up(entries, synced)
                # Still too many (locks held elsewhere): the requests are in their sidecars
                # now, and the journal on disk still holds every other stream's state.
                if len(entries) <= journal_capacity():
                    await trio.to_thread.run_sync(write_journal, self._directory, entries)
            except StorageError as exc:
                for request in synced:
                    request.error = exc
                return
        # The new state goes into memory before any other task runs: the next commit's
        # journal is built from it and must not take a READY stream for an upload.
        for request in synced:
            request.error = None
            ctx = request.ctx
            ctx.durable_offset = request.target
            if request.ready is not None:
                ctx.sha256, ctx.finalized_at = request.ready
                ctx.set_status(StreamStatus.READY)

    async def _catch_up(
        self, entries: dict[str, dict[str, object]], synced: builtins.list[_Commit]
    ) -> None:
        """Rewrite lagging sidecars (one worker trip, one directory sync) and drop their
        entries, for a journal that would outgrow what recovery reads: the requests' streams
        at their new state (their data is synced; their submitters hold their sync locks
        and wait), and every other lagging stream whose sync lock is free at the state it
        has. A stream whose lock is held elsewhere (a sidecar record under way, a request
        waiting for the next batch) keeps its entry: its sidecar may be being written."""
        ours = {request.ctx.stream_id for request in synced}
        held = [
            ctx
            for sid in entries
            if sid not in ours
            and (ctx := self._streams.get(sid)) is not None
            and not ctx.deleted
            and ctx.status in (StreamStatus.UPLOADING, StreamStatus.READY)
            and _try_lock(ctx.sync_lock)
        ]
        try:
            records = [(ctx, SidecarRecord.of(ctx)) for ctx in held]
            records += [(request.ctx, request.record()) for request in synced]
            await trio.to_thread.run_sync(
                write_sidecars, [(ctx.sidecar_path, record) for ctx, record in records]
            )
            for ctx, record in records:
                ctx.recorded = (record.status, record.durable_offset)
                ctx.access_recorded = record.last_accessed_at
                del entries[ctx.stream_id]
        finally:
            for ctx in held:
                ctx.sync_lock.release()

    async def run_housekeeping(self, interval: float) -> None:
        """Every ``sync_interval`` seconds: flush streams with unflushed bytes (``sync_policy
        = "interval"``), expire uploads idle longer than ``upload_ttl``, and record access
        times that moved on by more than :data:`ACCESS_RECORD_INTERVAL`."""
        while True:
            await trio.sleep(interval)
            await self.housekeep()

    async def housekeep(self) -> None:
        """One round of :meth:`run_housekeeping` (public so tests and tools can run it at will):
        the streams to flush go in one group commit, the finalized streams whose sidecars
        lag get them in one worker trip."""
        now, ttl = time.monotonic(), self._config.upload_ttl
        sync = self._config.sync_policy == "interval"
        flushes: builtins.list[StreamContext] = []
        async with trio.open_nursery() as nursery:
            for ctx in builtins.list(self._streams.values()):
                if ctx.status.writable and ttl and now - ctx.idle_since > ttl:
                    nursery.start_soon(self._expire, ctx)
                elif sync and ctx.status.writable and ctx.size > ctx.durable_offset:
                    flushes.append(ctx)
                elif ctx.last_accessed_at - ctx.access_recorded > ACCESS_RECORD_INTERVAL:
                    nursery.start_soon(self._record_access, ctx)
            nursery.start_soon(self._sync_round, flushes)
            nursery.start_soon(self._record_sidecars, (StreamStatus.READY,))

    async def _sync_round(self, streams: builtins.list[StreamContext]) -> None:
        """Flush ``streams`` in one group commit; a stream whose flush is already under way
        (its sync lock held) is left to it. Failures are logged by the move to ERROR."""
        held = [ctx for ctx in streams if _try_lock(ctx.sync_lock)]
        try:
            requests = [
                self._commit_request(ctx)
                for ctx in held
                if not self._closed and not ctx.deleted and ctx.status.writable
            ]
            if requests:
                started = time.perf_counter()
                await self._group.submit(requests)
                for request in requests:
                    self._committed(request)
                if self._metrics is not None:
                    self._metrics.observe_fsync(time.perf_counter() - started)
            else:
                await trio.lowlevel.checkpoint()
        finally:
            for ctx in held:
                ctx.sync_lock.release()

    async def _record_sidecars(self, statuses: tuple[StreamStatus, ...]) -> None:
        """Rewrite the lagging sidecars of streams in ``statuses`` (one worker trip, one
        directory sync): the finalized streams that only the journal records as READY,
        during a round; every stream, at shutdown. They leave the journal at its next
        write."""
        held = [
            ctx
            for ctx in builtins.list(self._streams.values())
            if ctx.status in statuses and ctx.sidecar_lags and _try_lock(ctx.sync_lock)
        ]
        try:
            records = [(ctx.sidecar_path, SidecarRecord.of(ctx)) for ctx in held]
            try:
                await trio.to_thread.run_sync(write_sidecars, records)
            except StorageError as exc:  # the journal still records them: nothing is lost
                log.warning("recording finalized streams in their sidecars failed: %s", exc)
                return
            for ctx, (_, record) in zip(held, records, strict=False):
                ctx.recorded = (record.status, record.durable_offset)
                ctx.access_recorded = record.last_accessed_at
        finally:
            for ctx in held:
                ctx.sync_lock.release()

    async def _expire(self, ctx: StreamContext) -> None:
        """Remove an abandoned upload (unless an append holds it right now). Followers get
        :class:`StreamNotFoundError` rather than waiting forever; reads in flight finish."""
        idle = time.monotonic() - ctx.idle_since
        if idle <= self._config.upload_ttl or not ctx.status.writable:
            await trio.lowlevel.checkpoint()
            return  # written to or finalized since the round started
        removed = await self._remove(ctx, f"expired (no data for {idle:.1f} s, upload_ttl reached)")
        if removed and self._metrics is not None:
            self._metrics.expiries.inc()

    async def _record_access(self, ctx: StreamContext) -> None:
        """Write ``last_accessed_at`` to the sidecar; a failure only costs LRU precision."""
        if ctx.remote:  # no sidecar: nothing to record, and none must appear
            await trio.lowlevel.checkpoint()
            return
        async with ctx.sync_lock:
            if ctx.deleted or ctx.status is StreamStatus.ERROR:
                return
            record = SidecarRecord.of(ctx)
            try:
                await trio.to_thread.run_sync(write_sidecar, ctx.sidecar_path, record)
            except StorageError as exc:
                log.warning("stream %s: recording the access time failed: %s",
                            ctx.stream_id, exc)  # fmt: skip
            else:
                ctx.access_recorded = record.last_accessed_at
                ctx.recorded = (record.status, record.durable_offset)

    def _fail(self, ctx: StreamContext, exc: StorageError) -> None:
        """Put ``ctx`` in ERROR. The stream keeps the client's version of the error (``stat``
        shows it, a refused write quotes it); the server's paths in it go to the log only."""
        if ctx.checksum is not None:  # a restart resumes at the durable offset
            ctx.checksum.invalidate()
            ctx.drop_checksum()
        if exc.public_message != str(exc) and ctx.status is not StreamStatus.ERROR:
            log.error("stream %s failed: %s", ctx.stream_id, exc)
        ctx.set_status(StreamStatus.ERROR, error=exc.public_message)

    # -- finalize and delete ---------------------------------------------------------------

    async def finalize(
        self,
        stream_id: str,
        *,
        expected_size: int | None = None,
        sha256: str | None = None,
        writer: WriterLease | None = None,
    ) -> StreamInfo:
        """Verify size and sha256 of the stored bytes, make them durable and go READY.
        ``writer`` must be the stream's lease if one is held: no one finalizes a stream
        another writer is uploading.

        A mismatch raises :class:`ChecksumMismatchError` and the stream stays UPLOADING, so
        the client can repair it (resume at the real size) and finalize again.
        """
        ctx = self._get(stream_id, writer.generation if writer is not None else None)
        if expected_size is not None:
            check_size("expected_size", expected_size)
        wanted = _check_sha256(sha256)
        async with ctx.write_lock:
            self._require_live(ctx)
            ctx.require_writable()
            self._require_writer(ctx, writer)
            size = ctx.size
            if expected_size is not None and expected_size != size:
                raise ChecksumMismatchError(
                    f"stream {ctx.stream_id} holds {size} bytes, not {expected_size}"
                )
            cache = _open_cache(ctx)
            try:
                if size <= INLINE_HASH_LIMIT:
                    digest = _sha256_of(cache, size)
                else:
                    digest = await trio.to_thread.run_sync(_sha256_of, cache, size)
            except StorageError as exc:
                self._fail(ctx, exc)
                raise
            if wanted is not None and wanted != digest:
                raise ChecksumMismatchError(
                    f"stream {ctx.stream_id}: the sha256 of its {size} bytes is {digest}, "
                    f"not {wanted}"
                )
            # A WAV recorded to a pipe carries placeholder sizes: fix them now that the size
            # is final (after checking what the client sent; the new digest is what is stored).
            if is_wav_content_type(ctx.content_type):
                try:
                    digest = await trio.to_thread.run_sync(
                        _repair_audio_header, cache, ctx.info(), digest
                    )
                except StorageError as exc:
                    self._fail(ctx, exc)
                    raise
            async with ctx.sync_lock:
                now = time.time()
                # The group commit is shielded: once the backend is finalized the record
                # must follow, or memory (UPLOADING) and disk (truncated) would disagree.
                request = self._commit_request(ctx, ready=(digest, now))
                await self._group.submit([request])
                ctx.reserved = cache.size
                self._committed(request)
                if request.error is not None:
                    raise request.error
                ctx.writer = None  # nothing more to write
                ctx.drop_checksum()
                # No sync: a leftover checksum file of a READY stream is removed at start.
                with suppress(OSError):
                    os.unlink(ctx.checksum_path)
                if self._tier is not None:
                    self._tier.stream_ready(ctx.info())
        return ctx.info()

    async def delete(self, stream_id: str) -> None:
        """Remove the stream and its files. Followers get :class:`StreamNotFoundError`;
        reads already running finish first, then the backend is closed.

        If the directory cannot be synced afterwards the stream is gone all the same, but
        :class:`StorageError` says the deletion may not survive a power loss."""
        ctx = self._get(stream_id)
        async with ctx.write_lock, ctx.sync_lock:
            self._require_live(ctx)
            unsynced = await self._remove_locked(ctx, "deleted")
        if unsynced is not None:
            raise unsynced

    async def _remove(self, ctx: StreamContext, why: str) -> bool:
        """Evict or expire ``ctx`` unless a writer, flush or delete holds it; whether it
        was removed. A READY stream whose sidecar is being recorded is removed once the
        record is written (a worker thread's moment), not passed over."""
        try:
            ctx.write_lock.acquire_nowait()
        except trio.WouldBlock:
            return False
        try:
            try:
                ctx.sync_lock.acquire_nowait()
            except trio.WouldBlock:
                if ctx.status is not StreamStatus.READY:
                    return False
                await ctx.sync_lock.acquire()
                if ctx.readers or ctx.followers:  # in use since
                    ctx.sync_lock.release()
                    return False
            try:
                if ctx.deleted or self._closed:
                    return False
                try:
                    unsynced = await self._remove_locked(ctx, why)
                except StorageError:
                    return False  # logged by _remove_locked
                if unsynced is not None:
                    log.warning("stream %s: %s", ctx.stream_id, unsynced)
                return True
            finally:
                ctx.sync_lock.release()
        finally:
            ctx.write_lock.release()

    async def _remove_locked(self, ctx: StreamContext, why: str) -> StorageError | None:
        """Remove the files and forget the stream (both locks held). Raise if nothing was
        removed; return the directory-sync failure if the removal may not be durable."""
        if why != "deleted" and ctx.tiered and self._tier is not None:
            return await self._demote_locked(ctx, why)
        try:
            unsynced = await trio.to_thread.run_sync(_remove_files, ctx)
        except StorageError as exc:
            log.error("stream %s: removing it failed: %s", ctx.stream_id, exc)
            raise
        ctx.deleted = True
        del self._streams[ctx.stream_id]
        if why == "deleted" and self._tier is not None:
            self._tier.stream_deleted(ctx.info())
        self._times.forget(ctx.stream_id)
        ctx.close_when_idle()
        ctx.notify()
        log.log(logging.INFO if why == "deleted" else logging.WARNING,
                "stream %s: %s (was %s, %d bytes)", ctx.stream_id, why, ctx.status.value,
                ctx.size)  # fmt: skip
        return unsynced

    async def _demote_locked(self, ctx: StreamContext, why: str) -> StorageError | None:
        """Evict a tiered stream: its files go, the stream stays, ``remote`` (both locks
        held; nothing reads it in a thread, or it would not have been chosen)."""
        try:
            unsynced = await trio.to_thread.run_sync(_remove_files, ctx)
        except StorageError as exc:
            log.error("stream %s: removing its files failed: %s", ctx.stream_id, exc)
            raise
        ctx.close_when_idle()
        ctx.close_pending = False
        ctx.cache, ctx.remote, ctx.remote_reads, ctx.reserved = None, True, 0, 0
        ctx.recorded = (ctx.committed_status, ctx.durable_offset)  # no sidecar to catch up
        ctx.shared_reads = (-1, {})
        log.info("stream %s: %s; still in the bucket (%d bytes)", ctx.stream_id, why, ctx.size)
        return unsynced

    # -- shutdown --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Flush and close every stream; later calls raise :class:`CacheClosedError`."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        streams = builtins.list(self._streams.values())
        for ctx in streams:
            ctx.notify()  # followers wake up and see the manager closed
        async with trio.open_nursery() as nursery:
            for ctx in streams:
                nursery.start_soon(self._close_stream, ctx)
        await self._record_sidecars((StreamStatus.UPLOADING, StreamStatus.READY))
        if not any(ctx.sidecar_lags for ctx in streams):
            with suppress(StorageError):  # a journal left behind only repeats the sidecars
                await trio.to_thread.run_sync(remove_journal, self._directory)
        for ctx in streams:
            ctx.close_when_idle()

    async def _close_stream(self, ctx: StreamContext) -> None:
        async with ctx.write_lock:
            if not ctx.deleted and ctx.status.writable:
                async with ctx.sync_lock:
                    with suppress(StorageError):  # logged by the status change to ERROR
                        await self._flush_locked(ctx)
            if not ctx.deleted and ctx.last_accessed_at != ctx.access_recorded:
                await self._record_access(ctx)


@attrs.define(eq=False)
class _Commit:
    """One stream's part of a group commit: flush (or finalize) it up to ``target``."""

    ctx: StreamContext
    target: int
    #: A finalize: the sha256 and time to record with READY.
    ready: tuple[str, float] | None = None
    #: Why it was not committed; the default holds until the commit says otherwise.
    error: StorageError | None = attrs.field(factory=lambda: StorageError("the commit did not run"))
    #: The data's flush failed (never retried into a success), not the journal's write.
    data_failed: bool = False

    def entry(self) -> dict[str, object]:
        return entry_of(self.ctx, durable_offset=self.target, ready=self.ready)

    def record(self) -> SidecarRecord:
        """The sidecar this commit's state makes (what :meth:`entry` says, in full)."""
        status, sha256, finalized_at = committed_state(self.ctx, self.ready)
        return attrs.evolve(
            SidecarRecord.of(self.ctx),
            status=status,
            durable_offset=self.target,
            sha256=sha256,
            finalized_at=finalized_at,
            error=None,
        )


def _sync_data(requests: Sequence[_Commit]) -> None:
    """Flush (or finalize) each request's data (blocking); a failure marks the request."""
    for request in requests:
        cache = _open_cache(request.ctx)
        try:
            if request.ready is not None:
                cache.finalize(request.target)
            else:
                cache.flush()
        except StorageError as exc:
            request.error, request.data_failed = exc, True


def _try_lock(lock: trio.Lock) -> bool:
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        return False
    return True


@asynccontextmanager
async def open_stream_manager(
    config: CacheConfig,
    *,
    registry: BackendRegistry | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[StreamManager]:
    """Check (or create, mode 0700) the cache directory, load the backend named by
    ``config.backend``, recover every stream, run the background sync and, on exit, flush
    and close every stream (shielded from cancellation, so a shutdown still syncs)."""
    factory = (registry if registry is not None else BackendRegistry()).load(config.backend)
    directory = await trio.to_thread.run_sync(prepare_cache_directory, config.directory)
    lock = await trio.to_thread.run_sync(lock_cache_directory, directory)
    try:
        async with _open_locked(config, factory, directory, metrics) as manager:
            yield manager
    finally:
        os.close(lock)


@asynccontextmanager
async def _open_locked(
    config: CacheConfig, factory: CacheFactory, directory: Path, metrics: Metrics | None
) -> AsyncIterator[StreamManager]:
    """:func:`open_stream_manager` once the directory is ours."""
    streams = await trio.to_thread.run_sync(recover_directory, directory, factory, config.options())
    manager = StreamManager(config, factory, directory, streams, metrics)
    log.info("stream manager on %s (%s backend): %d streams", directory, config.backend,
             len(streams))  # fmt: skip
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.run_housekeeping, config.sync_interval)
            try:
                yield manager
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps whatever the caller's block raised; the sync task raises
        # nothing of its own, so a lone exception is the caller's: give it back as raised.
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise
    finally:
        with trio.CancelScope(shield=True):
            await manager.aclose()


# -- blocking helpers, run in worker threads --------------------------------------------


def _open_cache(ctx: StreamContext) -> MemoryMappedCache:
    cache = ctx.cache
    if cache is None:  # only quarantined streams have none, and they are never writable
        raise StorageError(f"stream {ctx.stream_id} has no open data file")
    return cache


def _create_files(ctx: StreamContext, initial_size: int) -> None:
    remove_titles(titles_path(ctx.sidecar_path))  # a deleted namesake's, if its removal failed
    cache = _open_cache(ctx)
    cache.create(initial_size)  # O_CREAT|O_EXCL|O_NOFOLLOW, inside the cache directory
    try:
        ctx.checksum = open_checksum(ctx.checksum_path, create=True, base=0, end=0, crc=0)
        write_sidecar(ctx.sidecar_path, SidecarRecord.of(ctx))
    except BaseException:
        # The sidecar may be in place (only the directory sync failed): the create failed,
        # so no file may stay behind for the next start to find.
        cache.close()
        ctx.drop_checksum()
        for path in (ctx.sidecar_path, ctx.checksum_path, ctx.data_path):
            with suppress(OSError):
                os.unlink(path)
        raise


def _grow_and_write(cache: MemoryMappedCache, new_size: int, offset: int, data: Buffer) -> None:
    if new_size > cache.size:
        end = offset + memoryview(data).nbytes
        try:
            cache.resize(new_size)  # reserve first: ENOSPC here, before a byte is written
        except NoSpaceError:
            # A nearly full disk may not hold the geometric step, but this write may fit:
            # a failed growth changes nothing, so ask for just what it needs.
            if _blocks(end) >= new_size:
                raise
            cache.resize(_blocks(end))
    cache.write(offset, data)


def _sha256_of(cache: MemoryMappedCache, size: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, HASH_CHUNK):
        digest.update(cache.read(offset, min(HASH_CHUNK, size - offset)))
    return digest.hexdigest()


def _repair_audio_header(cache: MemoryMappedCache, info: StreamInfo, digest: str) -> str:
    """Patch a streamed WAV's header sizes; return the digest of the bytes now stored."""
    size = info.size
    if not is_wav_content_type(info.content_type):
        return digest
    repairs = wav_repairs(info.content_type, cache.read(0, min(HEAD_SIZE, size)), size)
    if not repairs:
        return digest
    for offset, value in repairs:
        cache.write(offset, value)
    log.info("stream %s: WAV header sizes set for %d bytes", info.stream_id, size)
    return _sha256_of(cache, size)


def _remove_files(ctx: StreamContext) -> StorageError | None:
    """Remove the sidecar (the commit point: after it the stream no longer exists), then the
    data, then sync the directory. A data file left behind is removed by the next recovery;
    a failed directory sync is returned: the stream is gone, but maybe not durably."""
    try:
        os.unlink(ctx.sidecar_path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(
            f"removing {ctx.sidecar_path}: {exc.strerror or exc}", errno=exc.errno
        ) from exc
    try:
        os.unlink(ctx.data_path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("stream %s: deleted, but removing its data failed: %s", ctx.stream_id, exc)
    with suppress(OSError):  # a leftover is removed with the data file at the next start
        os.unlink(ctx.checksum_path)
    with suppress(OSError):  # a leftover is removed at the next start (recovery)
        os.unlink(index_path(ctx.data_path.parent, ctx.stream_id))
    remove_titles(titles_path(ctx.sidecar_path))
    try:
        fsync_directory(ctx.data_path)
    except StorageError as exc:
        return StorageError(
            f"stream {ctx.stream_id} was deleted, but the deletion may not survive a power "
            f"loss: {exc}",
            errno=exc.errno,
        )
    return None


def _discard(cache: MemoryMappedCache, path: Path) -> None:
    """Undo a restore that failed: close and remove the data file it began."""
    with suppress(StorageError):
        cache.close()
    with suppress(OSError):
        os.unlink(path)


def _blocks(size: int) -> int:
    """``size`` rounded up to whole blocks."""
    return -(-size // BLOCK) * BLOCK


# -- argument checks ---------------------------------------------------------------------


def _check_content_type(value: object) -> str:
    if (
        not isinstance(value, str)
        or len(value) > MAX_CONTENT_TYPE_LENGTH
        or not _CONTENT_TYPE.fullmatch(value)
    ):
        raise InvalidArgumentError(
            f"content_type must be 1-{MAX_CONTENT_TYPE_LENGTH} printable ASCII characters"
        )
    return value


def _check_metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError("metadata must map strings to strings")
    if len(value) > MAX_METADATA_ITEMS:
        raise TooLargeError(f"metadata holds at most {MAX_METADATA_ITEMS} entries")
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError("metadata keys must be non-empty strings")
        if not isinstance(item, str):
            raise InvalidArgumentError("metadata values must be strings")
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise TooLargeError(f"metadata keys are at most {MAX_METADATA_KEY_LENGTH} characters")
        if len(item) > MAX_METADATA_VALUE_LENGTH:
            raise TooLargeError(
                f"metadata values are at most {MAX_METADATA_VALUE_LENGTH} characters"
            )
    return dict(value)


def _check_sha256(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidArgumentError("sha256 must be 64 hexadecimal digits")
    return value.lower()
