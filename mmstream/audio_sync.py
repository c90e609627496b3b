"""Where a late listener can start: a live stream's header and its decoder entry points.

A listener that joins a live stream mid-way cannot start at an arbitrary byte: a WebM/Matroska
decoder needs the EBML header, ``Segment``, ``Info`` and ``Tracks`` before any ``Cluster``;
an Ogg decoder needs the beginning-of-stream page and the codec's header pages (OpusHead and
OpusTags; Vorbis identification, comment and setup); a WAV player needs the RIFF header. So
the header is kept once, at the start of the stream, and a late listener gets it first and
then data from a *sync point*: a ``Cluster`` start, an Ogg page that begins a packet, an MPEG
audio / ADTS frame start, a WAV sample-frame boundary.

Sans-I/O, like h11: :class:`StreamSync` is fed the stream's bytes in order, as they are
appended, in pieces of any size, and answers with the sync points found in them. It never
holds more than one element or page head of unconsumed bytes (plus the header itself), so a
stream of any length costs the same memory; payloads are skipped, not buffered.

A new source that restarts the stream (a resumed Icecast ``PUT`` sending a fresh header) is
handled by :meth:`StreamSync.restart`, or found in-band: an Ogg BOS page after data, or an
EBML header where a top-level element was expected, replaces the kept header.
"""

from __future__ import annotations

from typing import Protocol

from ._chunks import HEADER_LIMIT, Chunked
from .audio import AudioFormat, detect_format, parse_wav
from .mpeg import AudioFrame, AudioFrames
from .ogg import BOS, CONTINUED, OggPage, OggPages

__all__ = ["HEADER_LIMIT", "StreamSync"]
#: Bytes needed to recognise the container.
_DETECT_SIZE = 12


class _Parser(Protocol):
    header: bytes | None
    #: Where the current header begins (a new one, in-band, replaces the old one).
    header_at: int
    #: Where every header began, oldest first, when the owner asked (else None).
    header_starts: list[int] | None

    def feed(self, data: bytes, start: int, out: list[int]) -> None: ...


class _Sniffer:
    """Counts a stream's bytes and holds its first ones until the container is known:
    what :class:`StreamSync` and the time parser (:mod:`mmstream.media`) share."""

    def __init__(self, start: int = 0) -> None:
        self._pending = bytearray()
        self._start = start
        self._position = start
        self.format: AudioFormat | None = None

    @property
    def position(self) -> int:
        """How many bytes of the stream have been fed (its absolute end)."""
        return self._position

    def _take(self, data: bytes, known: bool) -> tuple[bytes, int] | None:
        """Count ``data`` in; return it and its offset to parse, or, until the container
        is ``known``, ``None`` (held) and then everything held (:attr:`format` set)."""
        start = self._position
        self._position += len(data)
        if known:
            return data, start
        self._pending += data
        if len(self._pending) < _DETECT_SIZE:
            return None
        data, start = bytes(self._pending), self._start
        self._pending = bytearray()
        self.format = detect_format(data)
        return data, start

    def _forget(self) -> None:
        self._pending = bytearray()
        self._start = self._position
        self.format = None


class StreamSync(_Sniffer):
    """Feed a stream's bytes in order; learn its header and its sync points.

    ``header`` is ``None`` while unknown (not yet complete, or the format has none);
    :attr:`header_done` tells the two apart. Offsets are absolute stream offsets.
    """

    def __init__(self, start: int = 0, *, record_headers: bool = False) -> None:
        super().__init__(start)
        self._parser: _Parser | None = None
        #: With ``record_headers``: where each header began, oldest first (the time index
        #: gives a seek into an earlier Ogg chain that chain's header). One offset per
        #: header, as bounded as the stream's own sync points.
        self.header_starts: list[int] | None = [] if record_headers else None

    @property
    def header(self) -> bytes | None:
        return None if self._parser is None else self._parser.header

    @property
    def header_at(self) -> int:
        """Where the current header begins in the stream: a later one (an Ogg chain, a new
        EBML header) applies only to what follows it, so a listener given it starts after."""
        return self._start if self._parser is None else self._parser.header_at

    @property
    def header_done(self) -> bool:
        """True once listeners can be served: the header is known, or there is none."""
        match self._parser:
            case None:
                return False
            case _Headerless():
                return True
            case parser:
                return parser.header is not None

    def restart(self) -> None:
        """A new source starts at :attr:`position`: what follows is a fresh stream, whose
        header replaces the old one."""
        self._forget()
        self._parser = None

    def feed(self, data: bytes) -> list[int]:
        """Take the next bytes; return the sync points that begin within them."""
        found: list[int] = []
        taken = self._take(data, self._parser is not None)
        if taken is None:
            return found
        data, start = taken
        if self._parser is None:
            self._parser = _make_parser(self.format, start)
            self._parser.header_starts = self.header_starts
        self._parser.feed(data, start, found)
        return found


def _make_parser(fmt: AudioFormat | None, start: int) -> _Parser:
    match fmt:
        case AudioFormat.OGG:
            return _Ogg()
        case AudioFormat.WEBM | AudioFormat.MATROSKA:
            return _Ebml()
        case AudioFormat.WAV:
            return _Wav(start)
        case AudioFormat.MP3 | AudioFormat.AAC:
            return _Frames()
        case _:
            return _Raw()


class _Headerless:
    """A format with no header to keep: listeners can be served from the first sync point."""

    header: bytes | None = None
    header_at = 0
    header_starts: list[int] | None = None


class _Raw(_Headerless):
    """An unknown format: every appended piece starts where the writer cut it."""

    def feed(self, data: bytes, start: int, out: list[int]) -> None:
        if data:
            out.append(start)


# -- Ogg -----------------------------------------------------------------------------------


class _Ogg:
    """Pages (RFC 3533). The header is every page from a BOS up to the first page with a
    real granule position (Opus, Vorbis, FLAC and Speex give header pages granule 0); sync
    points are pages that do not continue a packet. A stream that starts without a BOS has
    no header: it is served from its first sync point."""

    def __init__(self) -> None:
        self._pages = OggPages()
        self._collect: bytearray | None = None
        self._in_data = False
        self.header: bytes | None = None
        self.header_at = 0
        self.header_starts: list[int] | None = None

    def feed(self, data: bytes, start: int, out: list[int]) -> None:
        pages: list[OggPage] = []
        self._pages.feed(data, start, pages)
        for page in pages:
            if page.flags & BOS and (self._in_data or self._collect is None):
                # The first header, or a new chain (or a new source) replacing the old one.
                self._in_data, self._collect, self.header = False, bytearray(), None
                self.header_at = page.offset
                if self.header_starts is not None:
                    self.header_starts.append(page.offset)
            if not self._in_data and page.granule not in (0, -1):
                self._in_data = True
                self.header = b"" if self._collect is None else bytes(self._collect)
                self._collect = None
            if self._in_data:
                if not page.flags & CONTINUED:
                    out.append(page.offset)
            elif self._collect is not None:
                self._collect += page.head + page.body
                if len(self._collect) > HEADER_LIMIT:  # too big to keep: served without
                    self._in_data, self._collect, self.header = True, None, b""


# -- EBML (WebM, Matroska) -----------------------------------------------------------------

_EBML = 0x1A45DFA3
_SEGMENT = 0x18538067
_CLUSTER = 0x1F43B675
_TOP_LEVEL = frozenset(
    {0x114D9B74, 0x1549A966, 0x1654AE6B, 0x1C53BB6B, 0x1254C367, 0x1043A770, 0x1941A469, _CLUSTER}
)  # fmt: skip  (SeekHead, Info, Tracks, Cues, Tags, Chapters, Attachments, Cluster)
_UNKNOWN_SIZE_8 = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def _vint(buf: bytearray, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-length integer at ``at``; ``None`` if
    incomplete; length 0 if invalid. An all-ones size is returned as -1 (unknown)."""
    if at >= len(buf):
        return None
    first = buf[at]
    if first == 0:
        return 0, 0
    length = 9 - first.bit_length()
    if at + length > len(buf):
        return None
    value = int.from_bytes(buf[at : at + length], "big")
    if keep_marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    if value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def _element_head(buf: bytearray) -> tuple[int, int, int] | None:
    """``(id, head length, size)`` of the EBML element starting ``buf``: ``None`` if
    incomplete, head length 0 if invalid, size -1 if unknown."""
    ident = _vint(buf, 0, keep_marker=True)
    if ident is None:
        return None
    if ident[1] == 0 or ident[1] > 4:
        return 0, 0, 0
    size = _vint(buf, ident[1], keep_marker=False)
    if size is None:
        return None
    if size[1] == 0:
        return 0, 0, 0
    return ident[0], ident[1] + size[1], size[0]


def _next_cluster(buf: bytearray) -> int:
    """Bytes to drop to resynchronise on the next ``Cluster`` id."""
    at = buf.find(b"\x1f\x43\xb6\x75", 1)
    return len(buf) - 3 if at < 0 else at


class _Ebml(Chunked[int]):
    """Top-level elements. The header is every byte before the first ``Cluster``; sync
    points are ``Cluster`` starts. Unknown-size clusters (MediaRecorder, live ffmpeg) are
    walked child by child until a top-level id ends them."""

    def __init__(self) -> None:
        super().__init__()
        self._collect = bytearray()
        self._segment_size_at: int | None = None  # where, in the header, a size to patch is

    def _step(self, out: list[int]) -> int:
        found = _element_head(self._buffer)
        if found is None:
            return 0
        element, head, size = found
        if head == 0:
            return self._resync()
        match element:
            case 0x1A45DFA3:  # _EBML: a (new) stream begins
                if self._collect is None or self.header is not None:
                    self._collect, self.header = bytearray(), None
                    self.header_at = self._buffer_at
                    if self.header_starts is not None:
                        self.header_starts.append(self._buffer_at)
                if size < 0:
                    return self._resync()
                self._skip = size
            case 0x18538067:  # _SEGMENT: enter it (its children are the top level)
                if self._collect is not None and head == 12:  # a 4-byte id, an 8-byte size
                    self._segment_size_at = len(self._collect) + 4
            case 0x1F43B675:  # _CLUSTER
                self._finish_header()
                out.append(self._buffer_at)
                if size >= 0:
                    self._skip = size
                # else: unknown size: walk its children, which are skipped one by one
            case _:
                if size < 0:
                    return self._resync()
                self._skip = size
        return head

    def _finish_header(self) -> None:
        if self._collect is None:
            return
        header = self._collect
        if self._segment_size_at is not None:
            # A late listener gets only part of the segment: its size is unknown to it.
            at = self._segment_size_at
            header[at : at + 8] = _UNKNOWN_SIZE_8
        self.header = bytes(header)
        self._collect = None
        self._segment_size_at = None

    def _resync(self) -> int:
        """Lost (bad data, or a source cut mid-element): skip to the next Cluster id."""
        return _next_cluster(self._buffer)


# -- MPEG audio / ADTS frames --------------------------------------------------------------


class _Frames(_Headerless):
    """MP3 and AAC (ADTS): each frame start is a sync point (frames from the one frame
    walker, :class:`mmstream.mpeg.AudioFrames`)."""

    def __init__(self) -> None:
        self._frames = AudioFrames()

    def feed(self, data: bytes, start: int, out: list[int]) -> None:
        frames: list[AudioFrame] = []
        self._frames.feed(data, start, frames)
        out.extend(frame.offset for frame in frames)


# -- WAV -----------------------------------------------------------------------------------


class _Wav:
    """The RIFF header up to the ``data`` payload; then sync points on sample frames."""

    def __init__(self, origin: int) -> None:
        self.header: bytes | None = None
        self.header_at = origin
        self.header_starts: list[int] | None = None
        self._origin = origin
        self._head = bytearray()
        self._data_at = 0
        self._align = 1

    def feed(self, data: bytes, start: int, out: list[int]) -> None:
        end = start + len(data)
        if self.header is None:
            self._head += data
            info = parse_wav(bytes(self._head), len(self._head))
            if info is None:
                if len(self._head) > HEADER_LIMIT:
                    self.header, self._head = b"", bytearray()
                return
            self.header = bytes(self._head[: info.data_offset])
            self._data_at = start = self._origin + info.data_offset
            self._align = max(1, info.block_align)
            self._head = bytearray()
        # One sync point per piece: the first frame boundary in it.
        first = start + (-(start - self._data_at)) % self._align
        if first < end:
            out.append(first)
