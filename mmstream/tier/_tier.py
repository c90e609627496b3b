"""The tier engine: copies READY streams to the bucket in the background, retries with
backoff through an outage, and deletes the copy when the stream is deleted.

The manager tells it what happened through :class:`~mmstream.streams.StreamTier`'s hooks
(which only record the work); ``upload_concurrency`` worker tasks do the work, the blocking
store calls in worker threads. A stream is read for its upload through the manager's public
``read`` (with its generation, under ``hold`` so it is not evicted meanwhile) and hashed on
the way: bytes that do not match the stream's sha256 raise inside the upload, which then
never completes. Nothing is persisted: at start every READY stream is offered again, and a
manifest already in the bucket for the same generation and sha256 is taken as done.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import trio

from ..config import TierConfig
from ..errors import ChecksumMismatchError, MmstreamError, StreamNotFoundError
from ..metrics import Metrics
from ..streams import StreamInfo, StreamManager
from ._manifest import Manifest, data_key, manifest_key
from ._store import ObjectNotFoundError, ObjectStore

__all__ = ["Tier"]

log = logging.getLogger("mmstream.tier")

#: Bytes read from the cache per call while uploading (several make one multipart part).
UPLOAD_PIECE = 4 * 1024 * 1024
_JSON = {"Content-Type": "application/json"}
T = TypeVar("T")


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
        #: Streams to copy, and copies to delete, by id (the latest word on an id wins).
        self._uploads: dict[str, StreamInfo] = {}
        self._deletes: dict[str, StreamInfo] = {}
        self._busy: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._wake = trio.Event()
        if metrics is not None:
            metrics.tier_backlog.set_function(lambda: self.backlog)

    @property
    def store(self) -> ObjectStore:
        return self._store

    @property
    def backlog(self) -> int:
        """Streams waiting to be copied or deleted, and those being done now."""
        return len(self._uploads) + len(self._deletes) + len(self._busy)

    # -- the manager's hooks (StreamTier) --------------------------------------------------

    def stream_ready(self, info: StreamInfo) -> None:
        self._uploads[info.stream_id] = info
        self._retry_at.pop(info.stream_id, None)
        self._attempts.pop(info.stream_id, None)
        self._wake.set()

    def stream_deleted(self, info: StreamInfo) -> None:
        self._uploads.pop(info.stream_id, None)
        self._deletes[info.stream_id] = info
        self._retry_at.pop(info.stream_id, None)
        self._wake.set()

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
            await trio.to_thread.run_sync(self._store.check, abandon_on_cancel=True)
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

    def _next(self) -> tuple[str, StreamInfo, bool] | float:
        """The next job ``(id, info, is_delete)``, or how long until one is due."""
        now = trio.current_time()
        soonest = float("inf")
        for jobs, is_delete in ((self._deletes, True), (self._uploads, False)):
            for sid, info in jobs.items():
                if sid in self._busy:
                    continue
                due = self._retry_at.get(sid, now)
                if due <= now:
                    del jobs[sid]
                    return sid, info, is_delete
                soonest = min(soonest, due - now)
        return soonest

    async def _worker(self) -> None:
        while True:
            job = self._next()
            if isinstance(job, float):
                self._wake = trio.Event()
                with trio.move_on_after(job):
                    await self._wake.wait()
                continue
            sid, info, is_delete = job
            self._busy.add(sid)
            try:
                if is_delete:
                    await self._delete(info)
                else:
                    await self._upload(info)
            except MmstreamError as exc:
                self._failed(info, is_delete, exc)
            else:
                self._attempts.pop(sid, None)
                self._retry_at.pop(sid, None)
            finally:
                self._busy.discard(sid)

    def _failed(self, info: StreamInfo, is_delete: bool, exc: MmstreamError) -> None:
        """Retry later with exponential backoff and jitter (unless newer work replaced it)."""
        sid = info.stream_id
        op = "delete" if is_delete else "upload"
        if self._metrics is not None:
            self._metrics.tier_errors.labels(op).inc()
        attempt = self._attempts.get(sid, 0) + 1
        self._attempts[sid] = attempt
        delay = min(self._retry_base * 2 ** (attempt - 1), self._retry_max)
        delay *= 0.5 + random.random() / 2
        log.warning("tier: %s of stream %s failed (attempt %d, again in %.1f s): %s",
                    op, sid, attempt, delay, exc)  # fmt: skip
        jobs = self._deletes if is_delete else self._uploads
        other = self._uploads if is_delete else self._deletes
        if sid not in jobs and sid not in other:  # nothing newer came for this id
            jobs[sid] = info
            self._retry_at[sid] = trio.current_time() + delay
        self._wake.set()

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
    for offset in range(0, info.size, UPLOAD_PIECE):
        length = min(UPLOAD_PIECE, info.size - offset)
        read = partial(manager.read, info.stream_id, offset, length, generation=info.generation)
        data = trio.from_thread.run(read, trio_token=token)
        if len(data) != length:
            raise ChecksumMismatchError(f"stream {info.stream_id} is shorter than {info.size}")
        digest.update(data)
        yield data
    if digest.hexdigest() != info.sha256:
        raise ChecksumMismatchError(
            f"stream {info.stream_id}: the bytes read do not match its sha256; not copied"
        )
