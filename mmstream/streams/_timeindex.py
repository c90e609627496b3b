"""Time ⇄ byte offset for every stream: what a seek by time (``?t=``, ``?at=``) answers from.

Two kinds of knowledge, kept apart because only one of them can be rebuilt:

- **Arrival marks** ``(offset, wall clock)``: when the byte at ``offset`` reached the server.
  The manager reports each appended batch (:meth:`TimeIndexes.appended`: a comparison, and
  at most once per :data:`MARK_INTERVAL` per stream one 16-byte ``write`` to the stream's
  ``<id>.idx`` file, append-only, never synced: a mark lost in a power cut costs only
  wall-clock precision; an upload shorter than the interval gets no file at all). They give the upload's start time, the wall clock of any byte,
  and, for containers without a clock of their own, the time index itself.
- **Media points** ``(seconds, offset)`` from the container's clock
  (:class:`~mmstream.media.TimeParser`). They are a function of the bytes, so they are
  never written down: they are built lazily, on the first seek, from the cached bytes, and
  carried on incrementally from where the last seek left them. The write path pays nothing
  for them (docs/performance.md has the figures).

Recovery is lazy too: the first time a stream is indexed after a start, its ``.idx`` is read;
a file of another generation (a deleted stream's), with a bad head, or torn, is cut back to
what is valid, and every mark past the stream's recovered size is dropped (never ahead of the
data). Deleting a stream removes its ``.idx`` with its other files.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import struct
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from ..audio_sync import StreamSync
from ..media import IndexPoint, TimeParser
from ._directory import index_path

__all__ = [
    "DEFAULT_HELD",
    "MARK_INTERVAL",
    "Seek",
    "TimeIndex",
    "TimeIndexes",
    "decode_marks",
    "encode_head",
    "encode_mark",
]

log = logging.getLogger("mmstream.streams")

#: Seconds between two arrival marks of one stream.
MARK_INTERVAL = 1.0
#: Bytes parsed per step while building a stream's media points.
PARSE_PIECE = 1024 * 1024
#: Streams whose media points (and header) are held in memory at once: ``cache.time_indexes``.
DEFAULT_HELD = 64
#: Bytes read after a point to find the exact frame in it.
REFINE_LIMIT = 256 * 1024

_MAGIC = b"MMTI"
_VERSION = 1
_HEAD = struct.Struct("<4sB3x8s")
_MARK = struct.Struct("<Qd")
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC

Reader = Callable[[int, int], bytes]


def encode_head(generation: str) -> bytes:
    return _HEAD.pack(_MAGIC, _VERSION, bytes.fromhex(generation))


def encode_mark(offset: int, wall: float) -> bytes:
    return _MARK.pack(offset, wall)


def decode_marks(blob: bytes, generation: str, size: int) -> tuple[list[tuple[int, float]], int]:
    """The valid marks in an ``.idx`` file's bytes, and how many leading bytes are valid
    (0: the head is bad or names another generation: start the file again). A mark must not
    go back in offset and must lie within the stream's ``size``; the first that does not,
    and all after it, are dropped."""
    if len(blob) < _HEAD.size or blob[: _HEAD.size] != encode_head(generation):
        return [], 0
    marks: list[tuple[int, float]] = []
    at = _HEAD.size
    while at + _MARK.size <= len(blob):
        offset, wall = _MARK.unpack_from(blob, at)
        if offset > size or (marks and offset < marks[-1][0]) or wall != wall:
            break
        marks.append((offset, wall))
        at += _MARK.size
    return marks, at


@attrs.frozen
class Seek:
    """Where a reader asking for a time starts: send ``header`` (what a decoder needs before
    any data: an Ogg stream's header pages, a WebM's EBML head and tracks, a WAV's RIFF
    head; empty for MP3 and AAC), then the stream from ``offset``, which plays at
    ``time`` media seconds and arrived at ``wall`` (Unix time). ``started_at`` (when the
    upload's first byte arrived) and ``duration`` (media seconds so far) describe the
    stream as indexed for this answer."""

    offset: int
    time: float
    wall: float
    header: bytes
    started_at: float
    duration: float


class TimeIndex:
    """One stream's marks and media points (see the module docstring)."""

    def __init__(self, generation: str, created_at: float, marks: list[tuple[int, float]]) -> None:
        self.generation = generation
        self.created_at = created_at
        self.mark_offsets = array("q", (o for o, _ in marks))
        self.mark_walls = array("d", (w for _, w in marks))
        #: Marks already in the ``.idx`` file.
        self.persisted = len(marks)
        #: No mark is taken before this wall-clock time.
        self.next_mark = (marks[-1][1] + MARK_INTERVAL) if marks else 0.0
        self.drop_points()
        #: What the last build reached: (bytes parsed, media seconds there, timed); kept
        #: when the points are dropped, so ``stat`` can say a duration without parsing.
        self.built: tuple[int, float, bool] = (0, 0.0, False)
        #: One builder at a time (a build may run in a worker thread).
        self.lock = trio.Lock()
        self.persist = True

    # -- arrival ---------------------------------------------------------------------------

    def mark(self, offset: int, wall: float) -> bytes:
        """Note that the byte at ``offset`` arrived at ``wall``; the records to persist
        (``b""``: none). A mark is taken once per :data:`MARK_INTERVAL`, and nothing is
        persisted before the second: an upload that lasts less than that (a clip) gets no
        file, its creation time is its clock to within the interval."""
        if self.mark_walls and (
            wall - self.mark_walls[-1] < MARK_INTERVAL or offset <= self.mark_offsets[-1]
        ):
            return b""
        self.mark_offsets.append(offset)
        self.mark_walls.append(wall)
        self.next_mark = wall + MARK_INTERVAL
        if len(self.mark_offsets) < 2:
            return b""
        records = b"".join(
            encode_mark(self.mark_offsets[i], self.mark_walls[i])
            for i in range(self.persisted, len(self.mark_offsets))
        )
        self.persisted = len(self.mark_offsets)
        return records

    @property
    def start_wall(self) -> float:
        """When the upload's first byte arrived (the stream's creation, if unrecorded)."""
        if self.mark_offsets and self.mark_offsets[0] == 0:
            return self.mark_walls[0]
        return self.created_at

    def wall_of(self, offset: int) -> float:
        """When the byte at ``offset`` arrived: interpolated between marks."""
        offsets, walls = self.mark_offsets, self.mark_walls
        if not offsets:
            return self.created_at
        at = bisect.bisect_right(offsets, offset)
        if at == 0:
            return walls[0]
        if at == len(offsets):
            return walls[-1]
        o0, o1, w0, w1 = offsets[at - 1], offsets[at], walls[at - 1], walls[at]
        return w0 + (w1 - w0) * (offset - o0) / (o1 - o0)

    # -- media points ----------------------------------------------------------------------

    def drop_points(self) -> None:
        """Forget the media points, the parser's state and the header (the part of an index
        that can be rebuilt from the cached bytes): the next :meth:`build` starts again."""
        self.times = array("d")
        self.offsets = array("q")
        self.parser = TimeParser()
        self.sync = StreamSync(record_headers=True)

    def known_duration(self, size: int, live: bool) -> float | None:
        """The stream's duration for ``stat``, from what is held, never parsing (``None``:
        unknown). Built to ``size``: the media seconds (arrival seconds if untimed). A live
        stream built only in part: the media seconds built plus the arrival seconds of the
        bytes since (what the encoder sends in real time). A finished stream never built to
        its end (an import runs faster than real time): unknown until a seek builds it."""
        parsed, media, timed = self.built
        arrived = (self.mark_walls[-1] - self.start_wall) if self.mark_walls else 0.0
        if parsed >= size:
            return media if timed else arrived
        if not live or not self.mark_walls:
            return None
        return (media if timed else 0.0) + max(self.wall_of(size) - self.wall_of(parsed), 0.0)

    @property
    def position(self) -> int:
        return self.parser.position

    def build(self, read: Reader, stop: int) -> None:
        """Parse the stream's bytes from :attr:`position` to ``stop`` (blocking reads)."""
        while self.parser.position < stop:
            data = read(self.parser.position, min(PARSE_PIECE, stop - self.parser.position))
            if not data:
                return
            self.sync.feed(data)
            for point in self.parser.feed(data):
                if not self.times or point.time >= self.times[-1]:
                    self.times.append(point.time)
                    self.offsets.append(point.offset)
            self.built = (self.parser.position, self.parser.time, self.parser.timed)

    @property
    def timed(self) -> bool:
        return self.parser.timed

    @property
    def duration(self) -> float:
        """Media seconds known so far (arrival seconds for an untimed stream)."""
        if self.timed:
            return self.parser.time
        return (self.mark_walls[-1] - self.start_wall) if self.mark_walls else 0.0

    def _points(self) -> tuple[array[float], array[int]]:
        if self.timed:
            return self.times, self.offsets
        start = self.start_wall
        return array("d", (w - start for w in self.mark_walls)), self.mark_offsets

    def seek(self, seconds: float, read: Reader, size: int) -> Seek:
        """The boundary at or just before ``seconds`` of media (clamped to the stream)."""
        times, offsets = self._points()
        if not times:
            return Seek(0, 0.0, self.start_wall, b"", self.start_wall, self.duration)
        at = max(bisect.bisect_right(times, seconds) - 1, 0)
        point = IndexPoint(times[at], offsets[at])
        if self.timed and seconds > point.time:
            stop = offsets[at + 1] if at + 1 < len(offsets) else size
            data = read(point.offset, min(stop - point.offset, REFINE_LIMIT))
            point = self.parser.refine(point, data, seconds)
        return Seek(point.offset, point.time, self.wall_of(point.offset),
                    self._header_for(point.offset, read), self.start_wall,
                    self.duration)  # fmt: skip

    def _header_for(self, offset: int, read: Reader) -> bytes:
        """The header a decoder starting at ``offset`` needs: the one in force there. A
        stream with several (an Ogg chain per title, a new source's header) keeps only the
        last; an earlier one is read again from where it began."""
        starts = self.sync.header_starts or []
        at = bisect.bisect_right(starts, offset) - 1
        if at < 0 or at == len(starts) - 1:
            return self.sync.header or b""
        sync, end = StreamSync(starts[at]), starts[at + 1]
        while not sync.header_done and sync.position < end:
            data = read(sync.position, min(PARSE_PIECE, end - sync.position))
            if not data:
                break
            sync.feed(data)
        return sync.header or b""

    def seconds_at_wall(self, wall: float) -> float:
        """The media time of what arrived at ``wall`` (Unix time): the last point that had
        arrived by then, plus the wall seconds since (up to the next point)."""
        if not self.timed:
            return wall - self.start_wall
        times, offsets = self.times, self.offsets
        if not times:
            return 0.0
        at = bisect.bisect_right(range(len(offsets)), wall, key=lambda i: self.wall_of(offsets[i]))
        at = max(at - 1, 0)
        later = max(wall - self.wall_of(offsets[at]), 0.0)
        if at + 1 < len(times):
            later = min(later, times[at + 1] - times[at])
        return times[at] + later


class TimeIndexes:
    """Every stream's :class:`TimeIndex`, by id; owned by the manager (which reports
    appends and deletions, and reads the bytes the indexes are built from).

    The arrival marks of every stream stay (16 bytes per second of upload, a bound the disk
    quota sets); the media points and header, the costly part (a header up to 1 MiB), are
    held for at most ``held`` streams, the least recently sought dropped first and rebuilt
    from the cached bytes on their next seek. An index in use (its lock held) is dropped at
    a later turn, so the bound is ``held`` plus the seeks running at the moment."""

    def __init__(self, directory: Path, held: int = DEFAULT_HELD) -> None:
        if held < 1:
            raise ValueError(f"time indexes held must be at least 1, not {held}")
        self._directory = directory
        self._indexes: dict[str, TimeIndex] = {}
        self._held = held
        #: Ids of the streams whose media points are held, least recently used first.
        self._recent: OrderedDict[str, None] = OrderedDict()

    def use_points(self, stream_id: str) -> None:
        """The stream's media points are about to be built or used (its index's lock held):
        note it, and drop the points of the least recently used beyond the bound."""
        self._recent[stream_id] = None
        self._recent.move_to_end(stream_id)
        for other in list(self._recent):
            if len(self._recent) <= self._held:
                return
            index = self._indexes.get(other)
            if index is None:
                del self._recent[other]
            elif other != stream_id and not index.lock.locked():
                index.drop_points()
                del self._recent[other]

    def held(self) -> list[str]:
        """Ids of the streams whose media points are in memory, least recently used first."""
        return list(self._recent)

    def get(self, stream_id: str, generation: str, created_at: float, size: int) -> TimeIndex:
        """The stream's index, loading (and repairing) its ``.idx`` on first use."""
        index = self._indexes.get(stream_id)
        if index is not None and index.generation == generation:
            return index
        index = TimeIndex(generation, created_at, self._load(stream_id, generation, size))
        self._indexes[stream_id] = index
        return index

    def appended(
        self, stream_id: str, generation: str, created_at: float, offset: int, size: int
    ) -> None:
        """Bytes ``[offset, size)`` just arrived (called by the manager after each write)."""
        now = time.time()
        index = self._indexes.get(stream_id)
        if index is None or index.generation != generation:
            index = self.get(stream_id, generation, created_at, offset)
        elif now < index.next_mark:
            return  # the hot path: one lookup, one comparison
        record = index.mark(offset, now)
        if not record or not index.persist:
            return
        path = index_path(self._directory, stream_id)
        try:
            fd = os.open(path, _FLAGS, 0o600)
            try:
                os.write(fd, record if os.fstat(fd).st_size else encode_head(generation) + record)
            finally:
                os.close(fd)
        except OSError as exc:
            index.persist = False  # the index is a convenience: never fail a write for it
            log.warning("stream %s: recording arrival times stopped: %s", stream_id, exc)

    def forget(self, stream_id: str) -> None:
        self._indexes.pop(stream_id, None)
        self._recent.pop(stream_id, None)

    def _load(self, stream_id: str, generation: str, size: int) -> list[tuple[int, float]]:
        path = index_path(self._directory, stream_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("stream %s: arrival times unreadable, starting again: %s", stream_id, exc)
            _unlink(path)
            return []
        try:
            blob = os.read(fd, os.fstat(fd).st_size)
            marks, valid = decode_marks(blob, generation, size)
            if valid < len(blob):
                # Another stream's, torn, or ahead of the recovered data: cut back to what
                # is valid (nothing: the next mark writes a fresh head).
                os.ftruncate(fd, valid)
                log.info("stream %s: arrival times cut back to %d marks", stream_id, len(marks))
        except OSError as exc:
            log.warning("stream %s: arrival times unreadable, starting again: %s", stream_id, exc)
            return []
        finally:
            os.close(fd)
        return marks


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
