"""HLS (RFC 8216, and its second edition "8216bis") from the cache, decided without I/O: which
segments a stream has, its media playlist, and a packed-audio segment's bytes.

A stream is cut at its time index's boundaries nearest before ``n * target_duration``
(``StreamManager.seek``): segment ``n`` is the bytes from boundary ``n`` to boundary
``n + 1``. The bytes of a stream never change once written, and the index is a function of
them, so a segment, once listed, is the same forever: immutable, cacheable by any CDN. While
the stream is UPLOADING only segments whose end boundary is final are listed (the playlist
is an ``EVENT`` playlist, growing); once READY the last segment runs to the end and the
playlist is ``VOD`` with ``EXT-X-ENDLIST``.

The segment format follows the stream's codec (:func:`hls_kind`):

- MP3 and AAC (ADTS) are **packed audio** (RFC 8216bis §3.4): the frames as they are
  stored, preceded by an ID3v2 tag whose ``PRIV`` frame
  ``com.apple.streaming.transportStreamTimestamp`` carries the first frame's presentation
  time (a 33-bit MPEG-2 timestamp, 90 kHz), which the spec requires.
- Opus, in Ogg or WebM, is **fragmented MP4** (CMAF, RFC 8216bis §3.3): an initialisation
  segment named by ``EXT-X-MAP``, and each segment the packets of its pages or clusters
  re-wrapped (:mod:`mmstream.media`).
- Other containers have no HLS form: :func:`hls_kind` says why.
"""

from __future__ import annotations

import bisect
import datetime
import math
import struct
from array import array
from collections.abc import Callable, Sequence

import attrs
from attrs import validators as v

from ..audio import AudioFormat
from ..media import OpusTrack, init_segment, media_segment, opus_packets, opus_track

__all__ = [
    "DEFAULT_TARGET_DURATION",
    "OPUS_CONTAINERS",
    "Boundaries",
    "HlsKind",
    "LowLatency",
    "MediaPlan",
    "Part",
    "Segment",
    "fmp4_segment",
    "hls_kind",
    "id3_timestamp",
    "media_playlist",
    "packed_audio_segment",
    "plan_media",
    "plan_segments",
]

DEFAULT_TARGET_DURATION = 4.0
_PTS_HZ = 90_000
_PTS_WRAP = 1 << 33
_PRIV_OWNER = b"com.apple.streaming.transportStreamTimestamp\x00"


@attrs.frozen
class HlsKind:
    """How a stream is served as HLS: its segments' file extension and media type, and for
    fMP4 the Opus track the initialisation segment describes (``None``: packed audio)."""

    extension: str
    content_type: str
    track: OpusTrack | None = None

    @property
    def init(self) -> bytes | None:
        """The fMP4 initialisation segment (``EXT-X-MAP``); ``None`` for packed audio."""
        return None if self.track is None else init_segment(self.track.head)

    def segment(self, data: bytes, segment: Segment | Part) -> bytes | str:
        """``segment`` (or part) made from its stored bytes ``data``, or why it has none."""
        if self.track is None:
            return packed_audio_segment(data, segment.time)
        return fmp4_segment(self.track, data, segment)


_KINDS = {
    AudioFormat.MP3: HlsKind("mp3", "audio/mpeg"),
    AudioFormat.AAC: HlsKind("aac", "audio/aac"),
}
#: Containers whose streams may hold Opus: their header says (:func:`hls_kind`).
OPUS_CONTAINERS = (AudioFormat.OGG, AudioFormat.WEBM, AudioFormat.MATROSKA)


def hls_kind(fmt: AudioFormat | None, header: bytes = b"") -> HlsKind | str:
    """How a stream is served as HLS, from its container and, for Ogg and WebM, its
    ``header`` (its first bytes, up to its first page of audio or cluster), or why it
    cannot be. A header that declares Opus gives fMP4 segments."""
    found = _KINDS.get(fmt) if fmt is not None else None
    if found is not None:
        return found
    track = opus_track(fmt, header) if fmt in OPUS_CONTAINERS else None
    if track is not None:
        return HlsKind("m4s", "audio/mp4", track)
    name = fmt.name.lower() if fmt is not None else "an unrecognised format"
    if fmt in OPUS_CONTAINERS:
        name += " without Opus (or its header has not all arrived yet)"
    return (
        f"HLS is served for MP3 and AAC (ADTS) streams, as packed audio, and Opus in Ogg or "
        f"WebM, as fMP4; this stream is {name}"
    )


@attrs.frozen
class Segment:
    """Bytes ``[start, stop)``, playing from ``time`` for ``duration`` seconds; its first
    byte arrived at ``wall`` (Unix time)."""

    sequence: int = attrs.field(validator=v.ge(0))
    start: int = attrs.field(validator=v.ge(0))
    stop: int = attrs.field()
    time: float
    duration: float
    wall: float

    @stop.validator
    def _check_stop(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value <= self.start:
            raise ValueError(f"empty segment [{self.start}, {value})")


#: A boundary: ``(media time, byte offset, wall clock)`` of a point a decoder can start at.
Boundary = tuple[float, int, float]


@attrs.define
class Boundaries:
    """Boundaries in three arrays (24 bytes each: a day of parts is 5 MiB, not 40): what a
    plan is cut from, kept and carried on by its owner as the stream grows."""

    times: array[float] = attrs.Factory(lambda: array("d"))
    offsets: array[int] = attrs.Factory(lambda: array("q"))
    walls: array[float] = attrs.Factory(lambda: array("d"))

    @classmethod
    def of(cls, boundaries: Sequence[Boundary]) -> Boundaries:
        found = cls()
        found.extend(boundaries)
        return found

    def extend(self, boundaries: Sequence[Boundary]) -> None:
        for time, offset, wall in boundaries:
            self.times.append(time)
            self.offsets.append(offset)
            self.walls.append(wall)

    def __len__(self) -> int:
        return len(self.offsets)


@attrs.frozen
class Part:
    """Partial segment ``index`` of segment ``sequence`` (LL-HLS): bytes ``[start, stop)``,
    playing from ``time`` for ``duration`` seconds; its first byte arrived at ``wall``."""

    sequence: int = attrs.field(validator=v.ge(0))
    index: int = attrs.field(validator=v.ge(0))
    start: int
    stop: int
    time: float
    duration: float
    wall: float

    @property
    def position(self) -> tuple[int, int]:
        return (self.sequence, self.index)


@attrs.frozen(eq=False)
class MediaPlan:
    """A stream's segments, and its parts cut from ``times``/``offsets``/``walls`` (the
    boundaries, and the stream's end once ``complete``) when asked for: a day of audio has
    216,000 parts, and a playlist lists the last few dozen."""

    times: array[float]
    offsets: array[int]
    walls: array[float]
    per_segment: int
    complete: bool
    segments: tuple[Segment, ...]
    #: ``(sequence, index)`` of the part being written (what a preload hint names);
    #: ``None`` once the stream is complete. Found once: every held reload asks.
    next_part: tuple[int, int] | None = attrs.field(init=False)
    #: ``(sequence, index)`` of the last final part; ``None``: none yet.
    last_part: tuple[int, int] | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "next_part", self._next_part())
        object.__setattr__(self, "last_part", self._last_part())

    def segment(self, sequence: int) -> Segment | None:
        at = bisect.bisect_left(self.segments, sequence, key=lambda s: s.sequence)
        found = self.segments[at] if at < len(self.segments) else None
        return found if found is not None and found.sequence == sequence else None

    def parts_of(self, sequence: int) -> list[Part]:
        """Segment ``sequence``'s final parts (of the one being written: those so far)."""
        times, offsets, walls = self.times, self.offsets, self.walls
        first = sequence * self.per_segment
        parts: list[Part] = []
        for k in range(max(first, 0), min(first + self.per_segment, len(offsets) - 1)):
            if offsets[k + 1] > offsets[k]:
                duration = max(times[k + 1] - times[k], 0.0)
                parts.append(Part(sequence, len(parts), offsets[k], offsets[k + 1], times[k],
                                  duration, walls[k]))  # fmt: skip
        return parts

    def part(self, sequence: int, index: int) -> Part | None:
        parts = self.parts_of(sequence)
        return parts[index] if 0 <= index < len(parts) else None

    def _next_part(self) -> tuple[int, int] | None:
        if self.complete:
            return None
        sequence = max(len(self.offsets) - 1, 0) // self.per_segment
        return (sequence, len(self.parts_of(sequence)))

    def _last_part(self) -> tuple[int, int] | None:
        sequence = max(len(self.offsets) - 2, 0) // self.per_segment
        for earlier in range(sequence, max(sequence - 3, -1), -1):
            parts = self.parts_of(earlier)
            if parts:
                return parts[-1].position
        return None

    def recent_parts(self, segments: int) -> list[Part]:
        """The parts of the last ``segments`` complete segments and of the one being
        written: what a live playlist lists (older parts only lengthen it)."""
        last = (len(self.offsets) - 1) // self.per_segment
        first = self.segments[-segments].sequence if len(self.segments) >= segments else 0
        return [part for n in range(first, last + 1) for part in self.parts_of(n)]


def plan_media(
    boundaries: Boundaries | Sequence[Boundary],
    *,
    per_segment: int = 1,
    end_time: float,
    end_offset: int,
    complete: bool,
    known: Sequence[Segment] = (),
) -> MediaPlan:
    """``boundaries[k]`` is the boundary nearest before ``k * target / per_segment``: part
    ``k % per_segment`` of segment ``k // per_segment`` runs from it to ``boundaries[k + 1]``,
    and segment ``n`` is its parts together. ``end_time``/``end_offset`` are the stream's
    current end; when ``complete`` (READY) the last boundary's part runs to it, otherwise it
    is the part being written, not listed yet (more bytes may still belong to it), and its
    segment is not listed either. Two boundaries at one offset (a container whose
    boundaries are further apart than a part) make no part, and a segment without parts
    none; packed audio (frames of ~25 ms) never has them, so its numbers have no gaps.
    ``known``: segments planned before from the same boundaries, kept as they are."""
    if per_segment < 1:
        raise ValueError(f"parts per segment must be at least 1, not {per_segment}")
    if not isinstance(boundaries, Boundaries):
        boundaries = Boundaries.of(boundaries)
    # Copies (memcpy): the owner goes on extending its arrays, a plan never changes.
    times, offsets = array("d", boundaries.times), array("q", boundaries.offsets)
    walls = array("d", boundaries.walls)
    if complete and offsets and end_offset > offsets[-1]:
        times.append(max(end_time, times[-1]))
        offsets.append(end_offset)
        walls.append(walls[-1])
    # Live, a segment is listed once the boundary after its last part is known.
    listed = (
        -(-(len(offsets) - 1) // per_segment) if complete else (len(offsets) - 1) // per_segment
    )
    segments = list(known)
    for n in range(segments[-1].sequence + 1 if segments else 0, listed):
        first, stop = n * per_segment, min((n + 1) * per_segment, len(offsets) - 1)
        if offsets[stop] > offsets[first]:
            segments.append(Segment(n, offsets[first], offsets[stop], times[first],
                                    max(times[stop] - times[first], 0.0), walls[first]))  # fmt: skip
    return MediaPlan(times, offsets, walls, per_segment, complete, tuple(segments))


def plan_segments(
    boundaries: Sequence[Boundary], *, end_time: float, end_offset: int, complete: bool
) -> list[Segment]:
    """The segments alone (:func:`plan_media` with one part per segment)."""
    plan = plan_media(boundaries, end_time=end_time, end_offset=end_offset, complete=complete)
    return list(plan.segments)


def _date_time(unix: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class LowLatency:
    """What a live playlist adds for LL-HLS (RFC 8216bis §4.4.3.7-8, §4.4.4.9, §4.4.5.3):
    ``parts`` to list (each before its segment's URI, those of the segment being written
    last), the part target, how far behind the live edge a player should play
    (``PART-HOLD-BACK``), and the URI of the part being written (the preload hint)."""

    parts: Sequence[Part]
    part_target: float
    part_hold_back: float
    uri: Callable[[Part], str]
    hint: str | None


def _part_lines(parts: Sequence[Part], low_latency: LowLatency) -> list[str]:
    return [
        f'#EXT-X-PART:DURATION={p.duration:.5f},URI="{low_latency.uri(p)}",INDEPENDENT=YES'
        for p in parts
    ]


def media_playlist(
    segments: Sequence[Segment],
    *,
    target_duration: float,
    ended: bool,
    uri: Callable[[Segment], str],
    low_latency: LowLatency | None = None,
    init: str | None = None,
) -> str:
    """The media playlist for ``segments`` (RFC 8216bis §4.4): ``EVENT`` while the stream
    grows, ``VOD`` with ``EXT-X-ENDLIST`` once it has ``ended``. ``EXT-X-TARGETDURATION``
    is at least every ``EXTINF`` rounded to the nearest integer (§4.4.3.1). With
    ``low_latency`` (live only), its parts, server control and preload hint too. fMP4
    segments name their initialisation segment ``init`` in ``EXT-X-MAP`` (version 6, §7)."""
    longest = max((s.duration for s in segments), default=target_duration)
    target = max(math.ceil(target_duration), round(longest), 1)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{3 if init is None else 6}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if ended else 'EVENT'}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        *([] if init is None else [f'#EXT-X-MAP:URI="{init}"']),
    ]
    parts_of: dict[int, list[Part]] = {}
    if low_latency is not None:
        lines[3:3] = [
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"PART-HOLD-BACK={low_latency.part_hold_back:.3f}",
            f"#EXT-X-PART-INF:PART-TARGET={low_latency.part_target:.3f}",
        ]
        for part in low_latency.parts:
            parts_of.setdefault(part.sequence, []).append(part)
    for segment in segments:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date_time(segment.wall)}")
        if low_latency is not None:
            lines += _part_lines(parts_of.pop(segment.sequence, []), low_latency)
        lines.append(f"#EXTINF:{segment.duration:.5f},")
        lines.append(uri(segment))
    if low_latency is not None:
        growing = [p for sequence in sorted(parts_of) for p in parts_of[sequence]]
        if growing:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date_time(growing[0].wall)}")
        lines += _part_lines(growing, low_latency)
        if low_latency.hint is not None:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{low_latency.hint}"')
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _syncsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def id3_timestamp(seconds: float) -> bytes:
    """An ID3v2.4 tag holding the ``PRIV`` transport-stream timestamp for ``seconds``."""
    pts = round(seconds * _PTS_HZ) % _PTS_WRAP
    body = _PRIV_OWNER + struct.pack(">Q", pts)
    frame = b"PRIV" + _syncsafe(len(body)) + b"\x00\x00" + body
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


def packed_audio_segment(data: bytes, time: float) -> bytes:
    """A packed-audio segment: the timestamp tag, then the frames as stored."""
    return id3_timestamp(time) + data


def fmp4_segment(track: OpusTrack, data: bytes, segment: Segment | Part) -> bytes | str:
    """An fMP4 media segment: the Opus packets of ``data`` (the segment's bytes), decoded
    from the segment's time on; or why it has none (a chained stream that changed its
    channels: what one fMP4 track can carry ends there)."""
    packets = opus_packets(data, track)
    if not packets.samples:
        return packets.stopped or f"segment {segment.sequence} holds no Opus packet"
    decode_time = packets.decode_time(segment.time)
    return media_segment(segment.sequence + 1, decode_time, packets.samples)
