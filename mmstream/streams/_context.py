"""A stream's state: the status machine, the mutable context the manager owns, and the
immutable snapshot callers see.

Every legal status change is in :data:`TRANSITIONS`; nothing else in the package decides
whether a stream may change status (h11 style: one table, not scattered ``if``s).

A stream id names a stream only until it is deleted: the same id may then be created again.
So each stream also has a *generation*, drawn at random when it is created and kept in its
sidecar, that no later stream under the same id shares (a counter would have to outlive the
stream it counts, and a deleted stream leaves nothing behind). Whatever sends a stream in
pieces names the generation it began with, and the manager refuses a piece of another one
(:class:`~mmstream.errors.StreamChangedError`).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import attrs
import trio

from ..cache import MemoryMappedCache
from ..errors import NotUploadingError, StorageError
from ._checksums import RunningChecksum
from ._directory import checksum_path

__all__ = [
    "TRANSITIONS",
    "StreamContext",
    "StreamInfo",
    "StreamStatus",
    "WriterLease",
    "is_generation",
    "legacy_generation",
    "new_generation",
]

log = logging.getLogger("mmstream.streams")

#: 64 random bits in hex: ids are reused a few times, never 2^32 times.
_GENERATION = re.compile(r"[0-9a-f]{16}")


def new_generation() -> str:
    """A fresh stream's generation."""
    return secrets.token_hex(8)


def legacy_generation(stream_id: str, created_at: object) -> str:
    """The generation of a stream recorded before generations were (sidecar version 1):
    derived from its id and creation time, so it is the same at every start (a stable ETag)
    and differs between two streams that had the same id (they were created at different
    times)."""
    return hashlib.sha256(f"{stream_id}\0{created_at!r}".encode()).hexdigest()[:16]


def is_generation(value: object) -> bool:
    return isinstance(value, str) and _GENERATION.fullmatch(value) is not None


class StreamStatus(enum.Enum):
    """A stream's life: UPLOADING (appends accepted, readable live), READY (finalized,
    immutable) or ERROR (quarantined by recovery or a failed write). One enum for the
    sidecar, the wire and the manager, so a status never needs translating."""

    UPLOADING = "uploading"
    READY = "ready"
    ERROR = "error"

    @property
    def writable(self) -> bool:
        """Appends (and finalize) are accepted only while uploading."""
        return self is StreamStatus.UPLOADING

    @property
    def readable(self) -> bool:
        """Reads work while uploading (live) and once ready; an ERROR stream is quarantined."""
        return self is not StreamStatus.ERROR


#: Every legal status change: UPLOADING → READY, and any status → ERROR. ERROR → ERROR is
#: allowed so that a second failure is not itself an error; the first reason is kept.
TRANSITIONS: Mapping[StreamStatus, frozenset[StreamStatus]] = MappingProxyType(
    {
        StreamStatus.UPLOADING: frozenset({StreamStatus.READY, StreamStatus.ERROR}),
        StreamStatus.READY: frozenset({StreamStatus.ERROR}),
        StreamStatus.ERROR: frozenset({StreamStatus.ERROR}),
    }
)


#: Characters in one title; more than an ICY block can carry (4,065 bytes) is never heard.
MAX_TITLE_LENGTH = 1024


@attrs.frozen
class Title:
    """One title of a live stream (Icecast's ``song``) and where it began: the stream's size
    and the wall-clock time when it was set."""

    title: str = attrs.field(
        validator=attrs.validators.and_(
            attrs.validators.instance_of(str), attrs.validators.max_len(MAX_TITLE_LENGTH)
        )
    )
    offset: int = attrs.field(
        validator=attrs.validators.and_(attrs.validators.instance_of(int), attrs.validators.ge(0))
    )
    time: float = attrs.field(validator=attrs.validators.instance_of((int, float)))


@attrs.frozen
class StreamInfo:
    """An immutable snapshot of one stream: what ``stat`` and ``list`` return."""

    stream_id: str
    status: StreamStatus
    content_type: str
    metadata: Mapping[str, str]
    #: Bytes acknowledged and readable (the written offset).
    size: int
    #: Bytes made durable (msync/fsync done and recorded in the sidecar).
    durable_offset: int
    #: Bytes allocated on disk for the stream.
    reserved: int
    created_at: float
    last_accessed_at: float
    finalized_at: float | None
    #: Hex digest of the stored bytes, known once READY.
    sha256: str | None
    #: Why the stream is in ERROR.
    error: str | None
    #: Which stream of this id it is: another after a delete and a create (module docstring).
    generation: str
    #: Where its bytes are: ``local`` (the cache only), ``local+remote`` (also copied to the
    #: object-storage tier, docs/tiering.md).
    location: str = "local"
    #: Its titles, oldest first (the last is the current one); kept in ``<id>.titles``.
    titles: tuple[Title, ...] = ()
    #: Media seconds and the upload's start (Unix time), as the time index knows them
    #: without parsing: filled by the manager's ``stat(times=True)`` only (None elsewhere).
    duration: float | None = None
    started_at: float | None = None


def _new_event() -> trio.Event:
    return trio.Event()


@attrs.define(eq=False)
class StreamContext:
    """One stream as the manager holds it. Only the manager mutates it.

    ``size`` is the written offset: everything below it was written and acknowledged.
    ``durable_offset <= size`` is what the last successful flush made durable *and* the
    sidecar records; recovery resumes an upload there.
    """

    stream_id: str
    data_path: Path
    sidecar_path: Path
    #: The backend object; ``None`` for a quarantined stream whose files were not opened.
    cache: MemoryMappedCache | None
    status: StreamStatus
    created_at: float
    last_accessed_at: float
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    size: int = 0
    durable_offset: int = 0
    #: Bytes counted against the quota: claimed before a growth starts, corrected after.
    reserved: int = 0
    finalized_at: float | None = None
    sha256: str | None = None
    error: str | None = None
    generation: str = attrs.field(factory=new_generation)
    #: An upload's running checksum and open ``.sum`` file (None once READY or in ERROR
    #: from recovery); see :mod:`._checksums`.
    checksum: RunningChecksum | None = attrs.field(default=None, repr=False)
    titles: tuple[Title, ...] = ()

    # Run-time coordination, never persisted.
    #: One writer: append, finalize and delete hold it.
    write_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False, repr=False)
    #: Serialises flush + sidecar writes so that a later record is never overwritten by an
    #: earlier one; readers and the inline write path never take it.
    sync_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False, repr=False)
    #: Set (and replaced) whenever size or status changes; see :meth:`notify`.
    changed: trio.Event = attrs.field(factory=_new_event, init=False, repr=False)
    #: Reads running in worker threads and holds (``StreamManager.hold``); the backend is
    #: closed only when this drops to 0, and eviction skips the stream meanwhile.
    readers: int = attrs.field(default=0, init=False, repr=False)
    #: Tasks in ``wait_for_data``: eviction and expiry skip a followed stream.
    followers: int = attrs.field(default=0, init=False, repr=False)
    #: The one writer allowed to append and finalize, if one holds the stream (see
    #: ``StreamManager.acquire_writer``); None: only writes that name no lease.
    writer: WriterLease | None = attrs.field(default=None, init=False, repr=False)
    #: ``time.monotonic()`` of the last append, finalize or (re)load: the upload TTL clock.
    #: A restart starts it afresh: the server's downtime is not the client's idleness.
    idle_since: float = attrs.field(factory=time.monotonic, init=False, repr=False)
    #: ``last_accessed_at`` as the sidecar last recorded it; reads only update memory and
    #: the housekeeping loop records the time now and then (LRU order survives a restart).
    access_recorded: float = attrs.field(default=0.0, init=False, repr=False)
    #: ``(status, durable_offset)`` as the sidecar records them: while they differ from the
    #: stream's, the journal carries its state (see ``_journal``).
    recorded: tuple[StreamStatus, int] = attrs.field(
        default=(StreamStatus.UPLOADING, 0), init=False, repr=False
    )
    close_pending: bool = attrs.field(default=False, init=False, repr=False)
    deleted: bool = attrs.field(default=False, init=False, repr=False)
    #: A byte-identical copy is in the object-storage tier (set by the tier, never persisted:
    #: the tier checks the bucket again at start): evicted before streams that are not.
    tiered: bool = attrs.field(default=False, init=False, repr=False)
    #: Its bytes are only in the tier (evicted here, or found there on a local miss): no
    #: files, no cache; reads go to the bucket.
    remote: bool = attrs.field(default=False, init=False, repr=False)
    #: Reads of a remote stream since it became remote: the second brings it back.
    remote_reads: int = attrs.field(default=0, init=False, repr=False)
    #: The followers' reads at one size, ``(size, {(offset, length): data})``: followers at
    #: the same offset after the same write share them (see ``StreamManager.read_shared``).
    shared_reads: tuple[int, dict[tuple[int, int], bytes]] = attrs.field(
        factory=lambda: (-1, {}), init=False, repr=False
    )

    @property
    def checksum_path(self) -> Path:
        return checksum_path(self.data_path.parent, self.stream_id)

    def info(self) -> StreamInfo:
        cache = self.cache
        reserved = cache.size if cache is not None and cache.is_open else self.reserved
        return StreamInfo(
            stream_id=self.stream_id,
            status=self.status,
            content_type=self.content_type,
            metadata=MappingProxyType(dict(self.metadata)),
            size=self.size,
            durable_offset=self.durable_offset,
            reserved=reserved,
            created_at=self.created_at,
            last_accessed_at=self.last_accessed_at,
            finalized_at=self.finalized_at,
            sha256=self.sha256,
            error=self.error,
            generation=self.generation,
            location="remote" if self.remote else "local+remote" if self.tiered else "local",
            titles=self.titles,
        )

    @property
    def committed_status(self) -> StreamStatus:
        """The status last made durable: an ERROR is kept in memory only, so a stream in
        ERROR is on disk what it was before (READY once a finalize committed)."""
        if self.status is not StreamStatus.ERROR:
            return self.status
        return StreamStatus.UPLOADING if self.finalized_at is None else StreamStatus.READY

    @property
    def sidecar_lags(self) -> bool:
        """The sidecar records an older status or durable offset than the stream has."""
        return self.recorded != (self.committed_status, self.durable_offset)

    @property
    def in_use(self) -> bool:
        """Read in a worker thread, held, followed or being written: never evicted. (A
        READY stream's sync lock only guards a record of it being written, a moment:
        eviction waits for it instead of passing the stream over.)"""
        return self.readers > 0 or self.followers > 0 or self.write_lock.locked()

    def notify(self) -> None:
        """Wake every ``wait_for_data`` waiter. Waiters take ``changed`` before checking
        their condition, and the event is replaced only here, so no wakeup is missed."""
        event, self.changed = self.changed, trio.Event()
        event.set()

    def set_status(self, new: StreamStatus, *, error: str | None = None) -> None:
        """Move to ``new`` if :data:`TRANSITIONS` allows it, log it and wake waiters."""
        old = self.status
        if new not in TRANSITIONS[old]:
            raise NotUploadingError(
                f"stream {self.stream_id} is {old.value}; it cannot become {new.value}"
            )
        self.status = new
        if new is StreamStatus.ERROR and self.error is None:
            self.error = error or "unknown error"
        if old is not new:
            if new is StreamStatus.ERROR:
                log.error("stream %s: %s -> error: %s", self.stream_id, old.value, self.error)
            else:
                log.info("stream %s: %s -> %s (%d bytes)", self.stream_id, old.value,
                         new.value, self.size)  # fmt: skip
        self.notify()

    def require_writable(self) -> None:
        if not self.status.writable:
            reason = f" ({self.error})" if self.error else ""
            raise NotUploadingError(
                f"stream {self.stream_id} is {self.status.value}{reason}; it takes no more data"
            )

    def require_readable(self) -> MemoryMappedCache:
        cache = self.cache
        if not self.status.readable or cache is None:
            raise StorageError(
                f"stream {self.stream_id} is quarantined ({self.error}); delete it to reclaim it"
            )
        return cache

    def close_when_idle(self) -> None:
        """Close the backend now, or when the last threaded read finishes: a read running in
        a worker thread must never see its mapping or descriptor closed under it."""
        self.close_pending = True
        if self.readers == 0:
            self._close()

    def reader_done(self) -> None:
        self.readers -= 1
        if self.readers == 0 and self.close_pending:
            self._close()

    def drop_checksum(self) -> None:
        """Close the ``.sum`` file: the stream is READY or gone, no more appends."""
        checksum, self.checksum = self.checksum, None
        if checksum is not None:
            checksum.close()

    def _close(self) -> None:
        self.drop_checksum()
        cache = self.cache
        if cache is not None and cache.is_open:
            try:
                cache.close()
            except StorageError as exc:
                log.warning("stream %s: closing the cache failed: %s", self.stream_id, exc)


@attrs.define(eq=False)
class WriterLease:
    """The right to write one stream, held by one writer whatever its route (a WebSocket
    upload binding, an Icecast source). Obtained from ``StreamManager.acquire_writer``,
    passed to every append and to finalize, released when the writer is done or its
    connection ends. While it is held, writes with another lease or none are refused with
    :class:`~mmstream.errors.StreamBusyError`."""

    stream_id: str
    #: Who holds it, for the server log (never sent to other clients).
    owner: str
    _context: StreamContext = attrs.field(repr=False)
    acquired_at: float = attrs.field(factory=time.monotonic, repr=False)

    @property
    def generation(self) -> str:
        """The generation of the stream the lease was taken on: a writer's appends name it,
        so they never go into another stream created under the same id."""
        return self._context.generation

    @property
    def held(self) -> bool:
        """False once released, taken over by a new writer, or the stream finalized."""
        return self._context.writer is self

    def release(self) -> None:
        """Give the stream up (idempotent; a lease no longer held releases nothing)."""
        if self._context.writer is self:
            self._context.writer = None
