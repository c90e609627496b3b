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

from ._chunks import HEADER_LIMIT
from .audio import AudioFormat, detect_format, parse_wav
from .ebml import EbmlElement, EbmlElements, ElementId
from .mpeg import AudioFrame, AudioFrames
from .ogg import BOS, CONTINUED, OggPage, OggPages

__all__ = ["HEADER_LIMIT", "StreamSync"]
#: Bytes needed to recognise the container.
_DETECT_SIZE = 12


class _Parser(Protocol):
    @property
    def header(self) -> bytes | None: ...
    @property
    def header_at(self) -> int:
        """Where the current header begins (a new one, in-band, replaces the old one)."""

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


class _Ebml:
    """Top-level elements, from the one element walker (:class:`mmstream.ebml.EbmlElements`),
    which keeps the header: every byte before the first ``Cluster``. Sync points are
    ``Cluster`` starts. Unknown-size clusters (MediaRecorder, live ffmpeg) are walked child
    by child until the next ``Cluster`` id."""

    def __init__(self) -> None:
        self._elements = EbmlElements(enter=_EBML_ENTERED, keep_header=True)

    @property
    def header(self) -> bytes | None:
        return self._elements.header

    @property
    def header_at(self) -> int:
        return self._elements.header_at

    @property
    def header_starts(self) -> list[int] | None:
        return self._elements.header_starts

    @header_starts.setter
    def header_starts(self, starts: list[int] | None) -> None:
        self._elements.header_starts = starts

    def feed(self, data: bytes, start: int, out: list[int]) -> None:
        elements: list[EbmlElement] = []
        self._elements.feed(data, start, elements)
        out.extend(e.offset for e in elements if e.id == ElementId.CLUSTER)


#: The Segment's children are the top level; a Cluster is skipped whole if its size is known.
_EBML_ENTERED = frozenset({ElementId.SEGMENT})


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
