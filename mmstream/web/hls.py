"""HLS (RFC 8216, and its second edition "8216bis") from the cache, decided without I/O: which
segments a stream has, its media playlist, and a packed-audio segment's bytes.

A stream is cut at its time index's boundaries nearest before ``n * target_duration``
(``StreamManager.seek``): segment ``n`` is the bytes from boundary ``n`` to boundary
``n + 1``. The bytes of a stream never change once written, and the index is a function of
them, so a segment, once listed, is the same forever: immutable, cacheable by any CDN. While
the stream is UPLOADING only segments whose end boundary is final are listed (the playlist
is an ``EVENT`` playlist, growing); once READY the last segment runs to the end and the
playlist is ``VOD`` with ``EXT-X-ENDLIST``.

Segments are **packed audio** (RFC 8216bis §3.4): the MP3 or ADTS frames as they are
stored, preceded by an ID3v2 tag whose ``PRIV`` frame
``com.apple.streaming.transportStreamTimestamp`` carries the first frame's presentation
time (a 33-bit MPEG-2 timestamp, 90 kHz), which the spec requires. Other containers have no
packed-audio form: :func:`hls_kind` says why.
"""

from __future__ import annotations

import datetime
import itertools
import math
import struct
from collections.abc import Callable, Sequence

import attrs
from attrs import validators as v

from ..audio import AudioFormat

__all__ = [
    "DEFAULT_TARGET_DURATION",
    "HlsKind",
    "Segment",
    "hls_kind",
    "id3_timestamp",
    "media_playlist",
    "packed_audio_segment",
    "plan_segments",
]

DEFAULT_TARGET_DURATION = 4.0
_PTS_HZ = 90_000
_PTS_WRAP = 1 << 33
_PRIV_OWNER = b"com.apple.streaming.transportStreamTimestamp\x00"


@attrs.frozen
class HlsKind:
    """How a format is served as HLS: its segments' file extension and media type."""

    extension: str
    content_type: str


_KINDS = {
    AudioFormat.MP3: HlsKind("mp3", "audio/mpeg"),
    AudioFormat.AAC: HlsKind("aac", "audio/aac"),
}


def hls_kind(fmt: AudioFormat | None) -> HlsKind | str:
    """The packed-audio kind for a container, or why it cannot be served as HLS."""
    found = _KINDS.get(fmt) if fmt is not None else None
    if found is not None:
        return found
    name = fmt.name.lower() if fmt is not None else "an unrecognised format"
    return (
        f"HLS is served for MP3 and AAC (ADTS) streams, as packed audio; this stream is "
        f"{name} (fMP4 segments for Opus are not implemented yet)"
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


def plan_segments(
    boundaries: Sequence[Boundary], *, end_time: float, end_offset: int, complete: bool
) -> list[Segment]:
    """Segment ``n`` runs from ``boundaries[n]`` (the boundary nearest before ``n * target``)
    to ``boundaries[n + 1]``. ``end_time``/``end_offset`` are the stream's current end;
    when ``complete`` (READY) the last boundary's segment runs to it, otherwise it is not
    listed yet (more bytes may still belong to it). Two boundaries at one offset (a
    container whose boundaries are further apart than the target) make no segment; packed
    audio (frames of ~25 ms) never has them, so its sequence numbers have no gaps."""
    points = list(boundaries)
    if complete and points and end_offset > points[-1][1]:
        points.append((max(end_time, points[-1][0]), end_offset, points[-1][2]))
    return [
        Segment(n, a[1], b[1], a[0], max(b[0] - a[0], 0.0), a[2])
        for n, (a, b) in enumerate(itertools.pairwise(points))
        if b[1] > a[1]
    ]


def _date_time(unix: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def media_playlist(
    segments: Sequence[Segment],
    *,
    target_duration: float,
    ended: bool,
    uri: Callable[[Segment], str],
) -> str:
    """The media playlist for ``segments`` (RFC 8216bis §4.4): ``EVENT`` while the stream
    grows, ``VOD`` with ``EXT-X-ENDLIST`` once it has ``ended``. ``EXT-X-TARGETDURATION``
    is at least every ``EXTINF`` rounded to the nearest integer (§4.4.3.1)."""
    longest = max((s.duration for s in segments), default=target_duration)
    target = max(math.ceil(target_duration), round(longest), 1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if ended else 'EVENT'}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for segment in segments:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date_time(segment.wall)}")
        lines.append(f"#EXTINF:{segment.duration:.5f},")
        lines.append(uri(segment))
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
