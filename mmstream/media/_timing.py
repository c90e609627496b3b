"""Time in a stream, from the container's own clock: which byte a decoder can start at for
a given second.

Sans-I/O, like :class:`~mmstream.audio_sync.StreamSync` (whose Ogg page iterator, MP3/ADTS
frame iterator and EBML element walker it shares): :class:`TimeParser` is fed a stream's
bytes in order, in pieces of any size, and answers with :class:`IndexPoint`\\ s —
``(time, offset)``: media seconds since the stream's first sample, and the absolute offset
of a decodable boundary that starts there. Feeding a stream whole or cut anywhere gives the
same points (a hypothesis test checks it), and memory stays at one page or element head
whatever the stream's length.

Where the time comes from:

- **Ogg** (Opus, Vorbis): the granule position of the page before, minus Opus's pre-skip,
  over the codec's rate (48 kHz for Opus; the identification header's for Vorbis). One
  point per page that begins a packet. Other codecs in Ogg have no known rate: no points.
- **WebM/Matroska**: each ``Cluster``'s ``Timecode`` times the ``TimecodeScale``; a
  point per cluster. The blocks' times say where the audio ends (:attr:`TimeParser.time`).
- **MP3** and **AAC (ADTS)**: frames counted (1152/576/384 samples per MPEG frame, 1024 per
  AAC raw data block) over each frame's own rate; an ID3v2 tag and a Xing/Info/VBRI frame
  count for nothing. Frames are ~25 ms, so a point is kept only every :attr:`spacing`
  seconds; :meth:`TimeParser.refine` walks frames from a point to the exact one.
- **WAV**: the byte rate of the ``fmt`` chunk; points every :attr:`spacing` seconds on
  sample frames, and :meth:`TimeParser.refine` computes the exact sample frame.
- Anything else: no points (:attr:`TimeParser.timed` is False); the caller uses arrival
  time instead.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..audio import AudioFormat, parse_wav
from ..audio_sync import _Sniffer
from ..ebml import EbmlElement, EbmlElements, ElementId, vint
from ..mpeg import AudioFrame, AudioFrames, frame_duration
from ..ogg import BOS, CONTINUED, OggPage, OggPages

__all__ = ["DEFAULT_SPACING", "IndexPoint", "TimeParser", "frame_duration"]

#: Seconds between two kept points for formats whose boundaries are closer than that.
DEFAULT_SPACING = 0.5


@attrs.frozen
class IndexPoint:
    """A decoder can start at byte ``offset``, which plays at ``time`` seconds."""

    time: float
    offset: int


# -- Ogg -----------------------------------------------------------------------------------

#: Body bytes of a BOS page needed to read the codec's rate (Vorbis: 16).
_CODEC_HEAD = 19


class _OggTimes:
    """Pages of the first logical stream. A new BOS after data (a new chain, or a new
    source) starts its own clock where the last one stopped."""

    def __init__(self, start_time: float) -> None:
        self._pages = OggPages()
        #: Media seconds of everything consumed so far (the end of the last page).
        self.time = start_time
        self._serial: int | None = None
        self._rate = 0
        self._preskip = 0
        self._base = start_time  # media time where the current chain began
        self._granule = 0  # last granule of the current chain
        self._in_data = False

    def walk(self, data: bytes, start: int) -> list[IndexPoint]:
        pages: list[OggPage] = []
        self._pages.feed(data, start, pages)
        points = []
        for page in pages:
            if page.flags & BOS and (self._serial is None or self._in_data):
                self._begin_chain(page.serial, page.body[:_CODEC_HEAD])
            if page.serial != self._serial or not self._rate:
                continue
            if not self._in_data and page.granule > 0:
                self._in_data = True
            if self._in_data and not page.flags & CONTINUED:
                points.append(IndexPoint(self._clock(self._granule), page.offset))
            if page.granule > 0:
                self._granule = page.granule
                self.time = self._clock(page.granule)
        return points

    def _begin_chain(self, serial: int, codec: bytes) -> None:
        self._base = self.time
        self._serial, self._granule, self._in_data = serial, 0, False
        if codec.startswith(b"OpusHead"):
            self._rate, self._preskip = 48000, int.from_bytes(codec[10:12], "little")
        elif codec.startswith(b"\x01vorbis"):
            self._rate, self._preskip = int.from_bytes(codec[12:16], "little"), 0
        else:
            self._rate = 0

    def _clock(self, granule: int) -> float:
        return self._base + max(granule - self._preskip, 0) / self._rate


# -- EBML (WebM, Matroska) -----------------------------------------------------------------

_ENTERED = frozenset({ElementId.SEGMENT, ElementId.INFO, ElementId.CLUSTER, ElementId.BLOCK_GROUP})
#: What is read of an element: a number (8 bytes at most); a block's track number (a
#: variable-length integer, 8 bytes at most) and its 2-byte time.
_READ = {ElementId.TIMECODE_SCALE: 8, ElementId.TIMECODE: 8, ElementId.BLOCK_DURATION: 8,
         ElementId.SIMPLE_BLOCK: 10, ElementId.BLOCK: 10}  # fmt: skip


class _EbmlTimes:
    """Elements from the one element walker (:class:`mmstream.ebml.EbmlElements`): enter
    ``Segment``, ``Info``, each ``Cluster`` and ``BlockGroup``; read ``TimecodeScale``,
    each cluster's ``Timecode`` (its first child) and each block's time; skip every other
    element.

    Blocks are read so that :attr:`time` is where the audio fed so far ends, not where its
    last cluster starts: a new source's EBML header starts its clock there. A block lasts
    its ``BlockDuration``, else as long as the gap from the block before it (equal frames,
    what encoders make)."""

    def __init__(self, start_time: float) -> None:
        self._elements = EbmlElements(enter=_ENTERED, read=_READ)
        #: Media seconds of the audio fed so far (where its last block ends).
        self.time = start_time
        self._scale = 1_000_000  # ns per timecode tick (the Matroska default)
        self._cluster_at: int | None = None
        self._cluster_time: float | None = None
        self._block_time: float | None = None
        self._gap = 0.0  # seconds between the last two blocks
        self._base = start_time

    def walk(self, data: bytes, start: int) -> list[IndexPoint]:
        elements: list[EbmlElement] = []
        self._elements.feed(data, start, elements)
        points: list[IndexPoint] = []
        for element in elements:
            match element.id:
                case ElementId.CLUSTER:
                    self._cluster_at, self._cluster_time = element.offset, None
                case ElementId.SIMPLE_BLOCK | ElementId.BLOCK:
                    self._block(element.body or b"")
                case ElementId.EBML:  # a new stream (a new source): its clock restarts
                    self._base, self._scale = self.time, 1_000_000
                    self._cluster_time = self._block_time = None
                    self._gap = 0.0
                case _ if element.body is not None and 0 < element.size <= 8:
                    self._read(element.id, int.from_bytes(element.body, "big"), points)
        return points

    def _read(self, element: int, value: int, points: list[IndexPoint]) -> None:
        if element == ElementId.TIMECODE_SCALE and value > 0:
            self._scale = value
        elif element == ElementId.TIMECODE and self._cluster_at is not None:
            time = self._cluster_time = self._base + value * self._scale / 1e9
            points.append(IndexPoint(time, self._cluster_at))
            self.time = max(self.time, time)
            self._cluster_at = None
        elif element == ElementId.BLOCK_DURATION and self._block_time is not None:
            self.time = max(self.time, self._block_time + value * self._scale / 1e9)

    def _block(self, body: bytes) -> None:
        """A block: its track number, then its time in ticks after its cluster's."""
        track = vint(body, 0)
        if self._cluster_time is None or track is None or not track[1]:
            return
        relative = body[track[1] : track[1] + 2]
        if len(relative) < 2:
            return
        time = self._cluster_time + int.from_bytes(relative, "big", signed=True) * self._scale / 1e9
        if self._block_time is not None and time > self._block_time:
            self._gap = time - self._block_time
        self._block_time = time
        self.time = max(self.time, time + self._gap)


# -- MPEG audio / ADTS frames --------------------------------------------------------------


class _FrameTimes:
    """Frames from the one frame walker; a point kept every ``spacing`` seconds."""

    def __init__(self, start_time: float, spacing: float) -> None:
        self._frames = AudioFrames()
        #: Media seconds of everything consumed so far (the end of the last frame).
        self.time = start_time
        self._spacing = spacing
        self._last: float | None = None

    def walk(self, data: bytes, start: int) -> list[IndexPoint]:
        frames: list[AudioFrame] = []
        self._frames.feed(data, start, frames)
        points = []
        for frame in frames:
            if frame.info:
                continue
            if self._last is None or self.time - self._last >= self._spacing - 1e-9:
                self._last = self.time
                points.append(IndexPoint(self.time, frame.offset))
            self.time += frame.duration
        return points


# -- WAV -----------------------------------------------------------------------------------


class _WavTimes:
    """The header up to the samples, then points every ``spacing`` seconds on sample frames."""

    def __init__(self, origin: int, start_time: float, spacing: float) -> None:
        self._origin = origin
        self._head = bytearray()
        self._spacing = max(spacing, 0.001)
        self._start_time = start_time
        self.data_at: int | None = None
        self.byte_rate = 0
        self.align = 1
        self._next = 0  # the next point's offset
        self.time = start_time

    def time_of(self, offset: int) -> float:
        assert self.data_at is not None
        return self._start_time + (offset - self.data_at) / self.byte_rate

    def walk(self, data: bytes, start: int) -> list[IndexPoint]:
        end = start + len(data)
        if self.data_at is None:
            self._head += data
            info = parse_wav(bytes(self._head), len(self._head))
            if info is None or info.byte_rate <= 0:
                if len(self._head) > 1024 * 1024 or (info is not None):
                    self._head = bytearray()  # not one we can time: give up
                    self.data_at = -1
                return []
            self._head = bytearray()
            self.data_at = self._next = self._origin + info.data_offset
            self.byte_rate, self.align = info.byte_rate, max(1, info.block_align)
        if self.data_at < 0:
            return []
        points = []
        step = max(self.align, int(self._spacing * self.byte_rate) // self.align * self.align)
        while self._next < end:
            points.append(IndexPoint(self.time_of(self._next), self._next))
            self._next += step
        whole = (end - self.data_at) // self.align * self.align
        self.time = max(self.time, self.time_of(self.data_at + whole))
        return points


class _Untimed:
    time = 0.0

    def walk(self, data: bytes, start: int) -> list[IndexPoint]:
        return []


# -- the façade ----------------------------------------------------------------------------

_Walker = _OggTimes | _EbmlTimes | _FrameTimes | _WavTimes | _Untimed


class TimeParser(_Sniffer):
    """Feed a stream's bytes in order; get its index points (see the module docstring)."""

    def __init__(self, start: int = 0, *, spacing: float = DEFAULT_SPACING) -> None:
        super().__init__(start)
        self.spacing = spacing
        self._walker: _Walker | None = None

    @property
    def time(self) -> float:
        """Media seconds of what was fed so far (the end of the last whole frame, page or
        WebM block): a live stream's duration, and where a new source's clock starts."""
        return 0.0 if self._walker is None else self._walker.time

    @property
    def timed(self) -> bool:
        """Whether the container carries time (once known): False means arrival time."""
        return self._walker is not None and not isinstance(self._walker, _Untimed)

    def feed(self, data: bytes) -> list[IndexPoint]:
        taken = self._take(data, self._walker is not None)
        if taken is None:
            return []
        data, start = taken
        if self._walker is None:
            self._walker = _make_walker(self.format, start, self.spacing)
        return self._walker.walk(data, start)

    def refine(self, point: IndexPoint, data: bytes, time: float) -> IndexPoint:
        """The boundary nearest before ``time``, from ``point`` and the stream's ``data``
        that follow it (up to the next kept point): the exact MP3/AAC frame or WAV sample
        frame. Pages and clusters are kept one by one, so they are exact already."""
        walker = self._walker
        if isinstance(walker, _WavTimes) and walker.data_at is not None and walker.data_at >= 0:
            frames = int(max(time - point.time, 0.0) * walker.byte_rate) // walker.align
            offset = min(point.offset + frames * walker.align, point.offset + len(data))
            offset -= (offset - walker.data_at) % walker.align
            return IndexPoint(walker.time_of(offset), offset)
        if isinstance(walker, _FrameTimes):
            return _walk_frames(point, data, time)
        return point


def _make_walker(fmt: AudioFormat | None, start: int, spacing: float) -> _Walker:
    makers: dict[AudioFormat | None, Callable[[], _Walker]] = {
        AudioFormat.OGG: lambda: _OggTimes(0.0),
        AudioFormat.WEBM: lambda: _EbmlTimes(0.0),
        AudioFormat.MATROSKA: lambda: _EbmlTimes(0.0),
        AudioFormat.MP3: lambda: _FrameTimes(0.0, spacing),
        AudioFormat.AAC: lambda: _FrameTimes(0.0, spacing),
        AudioFormat.WAV: lambda: _WavTimes(start, 0.0, spacing),
    }
    return makers.get(fmt, _Untimed)()


def _walk_frames(point: IndexPoint, data: bytes, time: float) -> IndexPoint:
    """From a frame start at ``point``, the last frame that starts at or before ``time``."""
    frames: list[AudioFrame] = []
    AudioFrames().feed(data, point.offset, frames)
    best, now = point, point.time
    for frame in frames:
        if now > time + 1e-9:
            break
        best = IndexPoint(now, frame.offset)
        now += frame.duration
    return best
