"""The tier engine: copies READY streams to the bucket in the background, retries with
backoff through an outage, deletes the copy when the stream is deleted, answers a node's
local misses and remote reads, and brings hot streams back into the cache.

The manager tells it what happened through :class:`~mmstream.streams.StreamTier`'s hooks
(which only record the work); ``upload_concurrency`` worker tasks do the work, the blocking
store calls in worker threads. A stream is read for its upload through the manager's public
``read`` (with its generation, under ``hold`` so it is not evicted meanwhile) and hashed on
the way: bytes that do not match the stream's sha256 raise inside the upload, which then
never completes. Nothing is persisted: at start every READY stream is offered again, and a
manifest already in the bucket for the same generation and sha256 is taken as done.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import attrs
import trio

from ..config import TierConfig
from ..errors import (
    ChecksumMismatchError,
    MmstreamError,
    QuotaExceededError,
    StorageError,
    StreamNotFoundError,
)
from ..metrics import Metrics
from ..streams import StreamInfo, StreamManager, StreamStatus
from ..streams._tiering import Writer
from ._manifest import Manifest, data_key, manifest_key
from ._store import ObjectNotFoundError, ObjectStore

__all__ = ["Tier"]

log = logging.getLogger("mmstream.tier")

#: Bytes moved per call between the cache and the bucket (several make one multipart part).
PIECE = 4 * 1024 * 1024
#: A local miss the bucket did not have either is not asked again for this long: a client
#: asking for random ids costs the bucket at most one request per id per interval.
MISS_TTL = 2.0
MAX_MISSES = 4096
_JSON = {"Content-Type": "application/json"}
T = TypeVar("T")


class Kind(enum.Enum):
    """What a tier job does to a stream's copy in the bucket; jobs are keyed by it so that a
    later job can replace an earlier one for the same stream (a delete drops a pending
    upload)."""

    DELETE = "delete"
    UPLOAD = "upload"
    RESTORE = "restore"


#: A job: what to do to which generation of which stream.
Job = tuple[Kind, str, str]


@attrs.define
class _Lookup:
    """One local miss being looked up in the bucket, and its answer for every asker."""

    done: trio.Event = attrs.Factory(trio.Event)
    manifest: Manifest | None = None
    error: StorageError | None = None


class Tier:
    """One bucket's copy of the READY streams of one manager."""

    def __init__(
        self,
        store: ObjectStore,
        config: TierConfig,
        metrics: Metrics | None = None,
        *,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self._store = store
        self._config = config
        self._metrics = metrics
        self._retry_base, self._retry_max = retry_base, retry_max
        self._manager: StreamManager | None = None
        #: Work to do, oldest first; one job per kind, stream and generation.
        self._jobs: dict[Job, StreamInfo] = {}
        #: Streams a worker is busy with: one job per stream at a time.
        self._busy: set[str] = set()
        self._attempts: dict[Job, int] = {}
        self._retry_at: dict[Job, float] = {}
        self._wake = trio.Event()
        #: Local misses being looked up (one request per id however many ask), and recent
        #: ones the bucket did not have.
        self._lookups: dict[str, _Lookup] = {}
        self._misses: dict[str, float] = {}
        if metrics is not None:
            metrics.tier_backlog.set_function(lambda: self.backlog)

    @property
    def store(self) -> ObjectStore:
        return self._store

    @property
    def backlog(self) -> int:
        """Jobs waiting (copies, deletes, restores), and those being done now."""
        return len(self._jobs) + len(self._busy)

    # -- the manager's hooks (StreamTier) --------------------------------------------------

    def _add(self, kind: Kind, info: StreamInfo) -> None:
        job = (kind, info.stream_id, info.generation)
        self._jobs[job] = info
        self._retry_at.pop(job, None)
        self._attempts.pop(job, None)
        self._wake.set()

    def _drop(self, stream_id: str, *kinds: Kind) -> None:
        for job in [job for job in self._jobs if job[1] == stream_id and job[0] in kinds]:
            del self._jobs[job]

    def stream_ready(self, info: StreamInfo) -> None:
        self._drop(info.stream_id, Kind.UPLOAD, Kind.RESTORE)
        self._misses.pop(info.stream_id, None)
        self._add(Kind.UPLOAD, info)

    def stream_deleted(self, info: StreamInfo) -> None:
        self._drop(info.stream_id, Kind.UPLOAD, Kind.RESTORE)
        self._add(Kind.DELETE, info)

    def stream_hot(self, info: StreamInfo) -> None:
        if (Kind.RESTORE, info.stream_id, info.generation) not in self._jobs:
            self._add(Kind.RESTORE, info)

    async def lookup(self, stream_id: str) -> StreamInfo | None:
        missed = self._misses.get(stream_id)
        if missed is not None and time.monotonic() - missed < MISS_TTL:
            await trio.lowlevel.checkpoint()
            return None
        pending = self._lookups.get(stream_id)
        if pending is None:  # the first to ask asks the bucket; the others wait for it
            pending = self._lookups[stream_id] = _Lookup()
            try:
                pending.manifest = await self.manifest(stream_id)
            except StorageError as exc:
                self._count_error("read")
                pending.error = StorageError(
                    f"stream {stream_id} is not here and the bucket failed: {exc}",
                    public=f"stream {stream_id} is not here and the bucket failed",
                )
            finally:
                del self._lookups[stream_id]
                pending.done.set()
            if pending.manifest is None and pending.error is None:
                self._note_miss(stream_id)
        else:
            await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.manifest.info() if pending.manifest is not None else None

    def _note_miss(self, stream_id: str) -> None:
        if len(self._misses) >= MAX_MISSES:
            self._misses.clear()
        self._misses[stream_id] = time.monotonic()

    async def read(self, info: StreamInfo, offset: int, length: int) -> bytes:
        key = data_key(info.stream_id, info.generation)
        try:
            data = await self._call(partial(self._store.get_range, key, offset, length))
        except StorageError:
            self._count_error("read")
            raise
        if len(data) != length:
            self._count_error("read")
            raise StorageError(f"stream {info.stream_id}: the bucket's copy is short")
        return data

    async def fetch(self, info: StreamInfo, write: Writer) -> None:
        key = data_key(info.stream_id, info.generation)
        await self._call(partial(_copy_down, self._store, key, info, write))

    # -- running ---------------------------------------------------------------------------

    async def run(
        self,
        manager: StreamManager,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Probe the bucket (a failure is logged, not fatal: local streams are served and
        the uploads wait), attach to ``manager`` and work until cancelled."""
        where = f"bucket {self._config.bucket} at {self._config.endpoint or 'AWS'}"
        try:
            await self._call(self._store.check)
        except MmstreamError as exc:
            log.warning("tier: %s cannot be reached (%s); streams are served from the cache "
                        "and copied once it answers", where, exc)  # fmt: skip
        else:
            log.info("tier: copying READY streams to %s", where)
        self._manager = manager
        manager.attach_tier(self)
        task_status.started()
        async with trio.open_nursery() as nursery:
            for _ in range(self._config.upload_concurrency):
                nursery.start_soon(self._worker)

    def _next(self) -> tuple[Job, StreamInfo] | float:
        """The next job due (deletes first), or how long until one is."""
        now = trio.current_time()
        soonest = float("inf")
        for kind in Kind:
            for job, info in self._jobs.items():
                if job[0] is not kind or job[1] in self._busy:
                    continue
                due = self._retry_at.get(job, now)
                if due <= now:
                    del self._jobs[job]
                    return job, info
                soonest = min(soonest, due - now)
        return soonest

    async def _worker(self) -> None:
        while True:
            found = self._next()
            if isinstance(found, float):
                # Every idle worker waits on the same event (a new one only once it was
                # set): new work wakes them all, not only the last to fall idle.
                if self._wake.is_set():
                    self._wake = trio.Event()
                with trio.move_on_after(found):
                    await self._wake.wait()
                continue
            job, info = found
            self._busy.add(job[1])
            try:
                await self._do(job[0], info)
            except ChecksumMismatchError as exc:
                # The local bytes are not the stream's any more: copying again cannot help.
                self._count_error(job[0].value if job[0] is not Kind.RESTORE else "read")
                log.error("tier: %s of stream %s abandoned: %s", job[0].value, job[1], exc)
            except MmstreamError as exc:
                self._failed(job, info, exc)
            else:
                self._attempts.pop(job, None)
                self._retry_at.pop(job, None)
            finally:
                self._busy.discard(job[1])
                self._wake.set()

    async def _do(self, kind: Kind, info: StreamInfo) -> None:
        match kind:
            case Kind.UPLOAD:
                await self._upload(info)
            case Kind.DELETE:
                await self._delete(info)
            case Kind.RESTORE:
                await self._restore(info)

    def _count_error(self, op: str) -> None:
        if self._metrics is not None:
            self._metrics.tier_errors.labels(op).inc()

    def _failed(self, job: Job, info: StreamInfo, exc: MmstreamError) -> None:
        """Retry later with exponential backoff and jitter (unless newer work replaced it)."""
        kind, sid, _ = job
        self._count_error("read" if kind is Kind.RESTORE else kind.value)
        attempt = self._attempts.get(job, 0) + 1
        self._attempts[job] = attempt
        delay = min(self._retry_base * 2 ** (attempt - 1), self._retry_max)
        delay *= 0.5 + random.random() / 2
        log.warning("tier: %s of stream %s failed (attempt %d, again in %.1f s): %s",
                    kind.value, sid, attempt, delay, exc)  # fmt: skip
        newer = any(other[1] == sid for other in self._jobs)
        if not newer:
            self._jobs[job] = info
            self._retry_at[job] = trio.current_time() + delay

    # -- the jobs --------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        """A blocking store call in a worker thread. On cancellation (shutdown) the thread
        is abandoned: an upload then fails reading its next piece and never completes."""
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)

    async def manifest(self, stream_id: str) -> Manifest | None:
        """The bucket's manifest for ``stream_id``, or None if it has none."""
        try:
            raw = await self._call(partial(self._store.get, manifest_key(stream_id)))
        except ObjectNotFoundError:
            return None
        try:
            return Manifest.decode(raw, stream_id)
        except ValueError as exc:
            log.warning("tier: ignoring the bucket's manifest of %s: %s", stream_id, exc)
            return None

    async def _upload(self, info: StreamInfo) -> None:
        manager = self._require_manager()
        sid, generation = info.stream_id, info.generation
        try:
            current = manager.stat(sid, generation=generation)
        except StreamNotFoundError:
            return  # deleted, or another stream under the id now (its own job copies it)
        if current.status is not StreamStatus.READY or current.location != "local":
            return  # quarantined since, or copied already
        existing = await self.manifest(sid)
        if existing is not None and existing.matches(info):
            self._mark(info)  # copied before a restart
            return
        manifest = Manifest.of(info)
        attributes = {"Content-Type": info.content_type, "sha256": manifest.sha256,
                      "generation": generation, "size": str(info.size)}  # fmt: skip
        token = trio.lowlevel.current_trio_token()
        try:
            with manager.hold(sid, generation=generation):
                pieces = _pieces(manager, info, token)
                await self._call(partial(self._store.put, manifest.data_key, pieces,
                                         size=info.size, attributes=attributes))  # fmt: skip
                body = manifest.encode()
                await self._call(partial(self._store.put, manifest_key(sid), [body],
                                         size=len(body), attributes=_JSON))  # fmt: skip
        except StreamNotFoundError:  # deleted (or another generation) meanwhile
            log.info("tier: stream %s went away during its upload", sid)
            self.stream_deleted(info)
            return
        if self._metrics is not None:
            self._metrics.tier_uploads.inc()
            self._metrics.tier_uploaded_bytes.inc(info.size)
        self._mark(info)

    def _mark(self, info: StreamInfo) -> None:
        try:
            self._require_manager().mark_tiered(info.stream_id, generation=info.generation)
        except StreamNotFoundError:  # deleted since: its delete job removes the copy
            return
        log.info("stream %s: copied to the bucket (%d bytes)", info.stream_id, info.size)

    async def _delete(self, info: StreamInfo) -> None:
        """Remove the manifest if it names this generation (a newer stream under the id
        keeps its own), then this generation's data."""
        sid = info.stream_id
        existing = await self.manifest(sid)
        if existing is not None and existing.generation == info.generation:
            await self._call(partial(self._store.delete, manifest_key(sid)))
        await self._call(partial(self._store.delete, data_key(sid, info.generation)))
        log.info("stream %s: deleted from the bucket", sid)

    async def _restore(self, info: StreamInfo) -> None:
        try:
            await self._require_manager().restore(info.stream_id, generation=info.generation)
        except StreamNotFoundError:
            return  # deleted meanwhile
        except QuotaExceededError as exc:
            log.info("tier: stream %s stays remote: %s", info.stream_id, exc)

    def _require_manager(self) -> StreamManager:
        if self._manager is None:
            raise RuntimeError("the tier is not running")
        return self._manager


def _pieces(
    manager: StreamManager, info: StreamInfo, token: trio.lowlevel.TrioToken
) -> Iterator[bytes]:
    """The stream's bytes, read through the manager from the upload's worker thread, hashed
    on the way: a mismatch raises before the upload completes, so it never does."""
    digest = hashlib.sha256()
    for offset in range(0, info.size, PIECE):
        length = min(PIECE, info.size - offset)
        read = partial(manager.read, info.stream_id, offset, length, generation=info.generation)
        data = trio.from_thread.run(read, trio_token=token)
        if len(data) != length:
            raise ChecksumMismatchError(f"stream {info.stream_id} is shorter than {info.size}")
        digest.update(data)
        yield data
    _check_digest(info, digest.hexdigest())


def _copy_down(store: ObjectStore, key: str, info: StreamInfo, write: Writer) -> None:
    """Fetch the copy piece by piece into ``write`` (blocking), checking size and sha256."""
    digest = hashlib.sha256()
    for offset in range(0, info.size, PIECE):
        length = min(PIECE, info.size - offset)
        data = store.get_range(key, offset, length)
        if len(data) != length:
            raise StorageError(f"stream {info.stream_id}: the bucket's copy is short")
        digest.update(data)
        write(offset, data)
    _check_digest(info, digest.hexdigest())


def _check_digest(info: StreamInfo, digest: str) -> None:
    if digest != info.sha256:
        raise ChecksumMismatchError(
            f"stream {info.stream_id}: its bytes do not match its sha256 {info.sha256}"
        )
