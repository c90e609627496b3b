"""Opus packets out of the containers a stream arrives in: Ogg pages (RFC 7845) and WebM
blocks, for HLS to re-wrap them into fMP4 (:mod:`._fmp4`) without decoding.

Pure and whole-buffer: :func:`opus_track` reads a stream's first bytes (its first Ogg
page, or WebM up to the first ``Cluster``); :func:`opus_packets` reads the bytes of one HLS
segment (from one time-index boundary to the next: an Ogg page that begins a packet, or a
``Cluster`` start). Ogg pages come from the one page iterator
(:class:`mmstream.ogg.OggPages`), EBML elements from the element walker the sync points use
(:class:`~mmstream.ebml.EbmlElements`).
An Ogg stream is read one logical stream at a time (chained, not multiplexed with another
codec's).

Chained Ogg (a new logical stream after data: a title set on the server, a new track or a
new source) is followed if its ``OpusHead`` sets up the same decoder
(:meth:`OpusHead.same_decoder`); its header packets are dropped and its packets continue
the same track. A head that needs another decoder ends what one fMP4 track can carry: the
packets stop there and :attr:`OpusPackets.stopped` says why. The same holds for a WebM
stream restarted by a new source (a new ``Tracks``).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ..audio import AudioFormat
from ..ebml import EbmlElement, EbmlElements, ElementId, vint
from ..ogg import BOS, CONTINUED, OggPage, OggPages
from ..ogg._pages import HEAD_SIZE
from ._fmp4 import TIMESCALE
from ._opus import OpusHead, packet_samples, parse_opus_head

__all__ = ["OpusPackets", "OpusTrack", "opus_packets", "opus_track"]

#: Header packets at the start of an Ogg Opus stream: OpusHead, OpusTags.
_OGG_HEADERS = 2

# The elements entered and read in a stream's header, and in its data (a whole segment).
_HEADER_ENTERED = frozenset({ElementId.SEGMENT, ElementId.INFO, ElementId.TRACKS,
                             ElementId.TRACK_ENTRY, ElementId.AUDIO})  # fmt: skip
_HEADER_READ = frozenset({ElementId.TIMECODE_SCALE, ElementId.TRACK_NUMBER, ElementId.CODEC_ID,
                          ElementId.CODEC_PRIVATE, ElementId.CHANNELS})  # fmt: skip
_DATA_ENTERED = frozenset({ElementId.SEGMENT, ElementId.CLUSTER, ElementId.BLOCK_GROUP})
_DATA_READ = frozenset({ElementId.TIMECODE, ElementId.TRACKS, ElementId.SIMPLE_BLOCK,
                        ElementId.BLOCK})  # fmt: skip


@attrs.frozen
class OpusTrack:
    """A stream's Opus track: the decoder's parameters and, in WebM, the track's number
    and the ``TimecodeScale`` (ns per tick)."""

    head: OpusHead
    container: AudioFormat
    number: int = 0
    scale: int = 1_000_000


@attrs.frozen
class OpusPackets:
    """One segment's packets as ``(packet, duration in 48 kHz samples)``.

    Where the first one decodes, for ``tfdt``, comes from the time index (which already
    made the segment's boundaries continuous over a whole stream, chains and restarts
    included) plus what the bytes say: :meth:`decode_time`."""

    samples: tuple[tuple[bytes, int], ...]
    #: Samples from the index's time of the segment to its first packet's decode time:
    #: Ogg's index counts after the pre-skip; a WebM block may start after its cluster.
    lead: int = 0
    #: The decode time of the first packet from the Ogg granule positions, where the
    #: index clamps it to 0 (the stream's first page, still inside the pre-skip).
    zero: int | None = None
    #: Why the packets end before the bytes do (a new chain another decoder would need).
    stopped: str | None = None
    #: WebM times are whole milliseconds (ffmpeg's are 1 ms late after the first block):
    #: a time within 1 ms of a whole number of frames of this many samples is taken as
    #: that, so that a stream of equal frames (what encoders make) is exact. 0: exact.
    grid: int = 0

    def decode_time(self, time: float) -> int:
        """The first packet's decode time (48 kHz samples) for a segment the index puts
        at ``time`` seconds."""
        if time <= 0 and self.zero is not None:
            return self.zero
        found = max(round(time * TIMESCALE) + self.lead, 0)
        if self.grid:
            snapped = round(found / self.grid) * self.grid
            if abs(snapped - found) <= TIMESCALE // 1000:
                return snapped
        return found


def opus_track(fmt: AudioFormat | None, header: bytes) -> OpusTrack | None:
    """The Opus track a stream's ``header`` declares, or ``None`` (another codec, or the
    header is not complete yet)."""
    match fmt:
        case AudioFormat.OGG:
            for _flags, _serial, _granule, packets, _ in _ogg_pages(header):
                head = parse_opus_head(packets[0]) if packets else None
                if head is not None:
                    return OpusTrack(head, AudioFormat.OGG)
            return None
        case AudioFormat.WEBM | AudioFormat.MATROSKA:
            return _webm_track(header)
        case _:
            return None


def opus_packets(data: bytes, track: OpusTrack) -> OpusPackets:
    """The Opus packets in ``data``, the bytes of one segment (see the module docstring)."""
    if track.container is AudioFormat.OGG:
        return _ogg_packets(data, track.head)
    return _webm_packets(data, track)


# -- Ogg -----------------------------------------------------------------------------------


def _ogg_pages(data: bytes) -> Iterator[tuple[int, int, int, list[bytes], bool]]:
    """``(flags, serial, granule, packets, last_continues)`` of each whole page in
    ``data`` (the pages :class:`~mmstream.ogg.OggPages` finds): the packet pieces it holds,
    the first continuing the previous page's packet if its flag says so, the last going on
    in the next page if ``last_continues``."""
    pages: list[OggPage] = []
    OggPages().feed(data, 0, pages)
    for page in pages:
        start = page.offset + len(page.head)
        lacing = page.head[HEAD_SIZE:]
        if start + sum(lacing) > len(data):
            return  # cut short
        pieces, piece = [], 0
        for size in lacing:
            piece += size
            if size < 255:
                pieces.append(data[start : start + piece])
                start, piece = start + piece, 0
        if piece:
            pieces.append(data[start : start + piece])
        yield page.flags, page.serial, page.granule, pieces, piece > 0


def _ogg_packets(data: bytes, head: OpusHead) -> OpusPackets:
    samples: list[tuple[bytes, int]] = []
    serial: int | None = None
    chained = False  # a new chain began in these bytes
    headers = 0  # header packets of the current chain still to drop
    partial: bytes | None = None
    zero: int | None = None
    for flags, page_serial, granule, pieces, continues in _ogg_pages(data):
        if flags & BOS:
            new = parse_opus_head(pieces[0]) if pieces else None
            if new is None:
                continue  # another codec's logical stream
            if not head.same_decoder(new):
                reason = (f"the stream changes its Opus channels ({head.channels} in family "
                          f"{head.family} to {new.channels} in family {new.family}) at a new chain")  # fmt: skip
                return OpusPackets(tuple(samples), head.preskip, zero, reason)
            serial, chained, headers, partial = page_serial, True, _OGG_HEADERS, None
        elif serial is None:
            serial = page_serial
        if page_serial != serial:
            continue
        if not flags & CONTINUED:
            partial = None  # a packet cut short (lost bytes): dropped
        elif partial is None:
            pieces = pieces[1:]  # the end of a packet that began before these bytes
        elif pieces:
            pieces[0] = partial + pieces[0]
        finished = pieces[:-1] if continues else pieces
        partial = pieces[-1] if continues and pieces else None
        for packet in finished:
            if headers:
                headers -= 1
            elif duration := packet_samples(packet):
                samples.append((packet, duration))
        if zero is None and not chained and granule >= 0 and finished:
            zero = max(granule - sum(d for _, d in samples), 0)
    return OpusPackets(tuple(samples), head.preskip, zero)


# -- WebM / Matroska -----------------------------------------------------------------------


def _elements(data: bytes, enter: frozenset[int], read: frozenset[int]) -> list[EbmlElement]:
    """The elements of ``data`` (bytes already in memory), from the one element walker
    (:class:`mmstream.ebml.EbmlElements`): those in ``read`` with their whole body. A
    truncated element at the end is left out."""
    found: list[EbmlElement] = []
    EbmlElements(enter=enter, read=dict.fromkeys(read, len(data))).feed(data, 0, found)
    return found


def _uint(payload: bytes | None) -> int:
    return int.from_bytes(payload or b"", "big")


def _webm_track(header: bytes) -> OpusTrack | None:
    """The first ``A_OPUS`` track of the ``Tracks`` in ``header``. A track without
    ``CodecPrivate`` (allowed for mono and stereo) gets the default head."""
    scale = 1_000_000
    entries: list[dict[int, bytes | None]] = []
    for element in _elements(header, _HEADER_ENTERED, _HEADER_READ):
        if element.id == ElementId.CLUSTER:
            break  # the header is over
        if element.id == ElementId.TIMECODE_SCALE:
            scale = _uint(element.body) or scale
        elif element.id == ElementId.TRACK_ENTRY:
            entries.append({})
        elif entries and element.id in _HEADER_READ:
            entries[-1][element.id] = element.body
    for entry in entries:
        if (entry.get(ElementId.CODEC_ID) or b"").rstrip(b"\x00") != b"A_OPUS":
            continue
        private = entry.get(ElementId.CODEC_PRIVATE) or b""
        channels = _uint(entry.get(ElementId.CHANNELS))
        head = parse_opus_head(private)
        if head is None and not private and channels <= 2:
            head = OpusHead(channels=channels or 1, preskip=0, input_rate=48000, gain=0, family=0)
        number = _uint(entry.get(ElementId.TRACK_NUMBER))
        if head is not None and number > 0:
            return OpusTrack(head, AudioFormat.WEBM, number, scale)
    return None


def _laced(frames: bytes, lacing: int) -> list[bytes]:
    """The frames of a block's payload after its flags (Matroska lacing: none, Xiph,
    fixed-size or EBML); empty if the lacing is inconsistent."""
    if lacing == 0:
        return [bytes(frames)]
    if not frames:
        return []
    count, at, sizes = frames[0] + 1, 1, []
    if lacing == 1:  # Xiph: each size a run of bytes, 255 meaning "more"
        for _ in range(count - 1):
            size = 0
            while at < len(frames) and frames[at] == 255:
                size, at = size + 255, at + 1
            if at >= len(frames):
                return []
            sizes.append(size + frames[at])
            at += 1
    elif lacing == 3:  # EBML: the first size, then signed differences
        for n in range(count - 1):
            found = vint(frames, at)
            if found is None or found[1] == 0 or found[0] < 0:
                return []
            value, length = found
            if n:
                value = sizes[-1] + value - ((1 << (7 * length - 1)) - 1)
            sizes.append(value)
            at += length
    rest = len(frames) - at - sum(sizes)
    if lacing == 2:
        rest, sizes = (len(frames) - at) // count, [(len(frames) - at) // count] * (count - 1)
    if rest < 0 or any(s < 0 for s in sizes):
        return []
    out = []
    for size in [*sizes, rest]:
        out.append(frames[at : at + size])
        at += size
    return out


def _webm_packets(data: bytes, track: OpusTrack) -> OpusPackets:
    samples: list[tuple[bytes, int]] = []
    first_cluster: int | None = None
    cluster = 0
    lead = 0
    for element in _elements(data, _DATA_ENTERED, _DATA_READ):
        payload = element.body
        if element.id == ElementId.TIMECODE:
            cluster = _uint(payload)
            first_cluster = cluster if first_cluster is None else first_cluster
        elif element.id == ElementId.TRACKS and payload is not None:  # a new source restarted
            new = _webm_track(payload)
            if new is not None and not track.head.same_decoder(new.head):
                reason = f"a new source changes the Opus channels to {new.head.channels}"
                return OpusPackets(tuple(samples), lead, None, reason)
            if new is not None:
                track = new
        elif element.id in (ElementId.SIMPLE_BLOCK, ElementId.BLOCK) and payload is not None:
            number = vint(payload, 0)
            if number is None or number[1] == 0 or number[0] != track.number:
                continue
            at = number[1]
            if len(payload) < at + 3:
                continue
            if not samples:
                relative = int.from_bytes(payload[at : at + 2], "big", signed=True)
                ticks = cluster + relative - (first_cluster or 0)
                lead = round(ticks * track.scale * TIMESCALE / 1e9)
            for packet in _laced(payload[at + 3 :], (payload[at + 2] >> 1) & 0x03):
                duration = packet_samples(packet)
                if duration:
                    samples.append((packet, duration))
    return OpusPackets(tuple(samples), lead, grid=samples[0][1] if samples else 0)
