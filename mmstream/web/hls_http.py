"""``GET /streams/{id}/index.m3u8`` and ``GET /streams/{id}/hls/{segment}``: HLS answers
from the cache (the decisions are in :mod:`.hls`; this module reads the manager).

A segment's name carries the stream's generation (``<generation>-<n>.mp3``): a stream
deleted and created again under the same id has other segment URIs, so a segment URI names
the same bytes forever and is served ``immutable`` with a strong ``ETag``. Playlists are
short-lived: ``max-age=1`` while the stream grows, a minute once it is finished.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..audio import detect_format
from ..errors import MmstreamError, StreamNotFoundError
from ..metrics import Metrics
from ..streams import StreamInfo, StreamManager, StreamStatus
from .hls import (
    DEFAULT_TARGET_DURATION,
    HlsKind,
    Segment,
    hls_kind,
    media_playlist,
    packed_audio_segment,
    plan_segments,
)
from .playback import Response, error_response

__all__ = ["PLAYLIST_TYPE", "SegmentPlans", "playlist_response", "segment_response"]

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"
_SEGMENT = re.compile(r"([0-9a-f]{16})-(\d{1,9})\.(mp3|aac)")
_NOSNIFF = ("X-Content-Type-Options", "nosniff")


async def _kind(manager: StreamManager, info: StreamInfo) -> HlsKind:
    head = await manager.read(info.stream_id, 0, 64, generation=info.generation)
    found = hls_kind(detect_format(head))
    if isinstance(found, str):
        raise StreamNotFoundError(found)
    return found


class SegmentPlans:
    """The segments of the streams asked for lately, by what determines them (id,
    generation, size, status, target): every listener of a stream asks for the same plan
    until its next write, and a finished stream's never changes. At most ``limit`` kept."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._plans: dict[tuple[str, str, int, StreamStatus, float], list[Segment]] = {}

    async def get(self, manager: StreamManager, info: StreamInfo, target: float) -> list[Segment]:
        key = (info.stream_id, info.generation, info.size, info.status, target)
        found = self._plans.get(key)
        if found is not None:
            return found
        seeks = await manager.boundaries(info.stream_id, target, generation=info.generation)
        plan = plan_segments(
            [(s.time, s.offset, s.wall) for s in seeks],
            end_time=seeks[0].duration,
            end_offset=info.size,
            complete=info.status is StreamStatus.READY,
        )
        if len(self._plans) >= self._limit:
            del self._plans[next(iter(self._plans))]  # the oldest
        self._plans[key] = plan
        return plan


def _count(metrics: Metrics | None, exc: MmstreamError) -> Response:
    if metrics is not None:
        metrics.errors.labels(exc.code).inc()
    return error_response(exc)


async def playlist_response(
    manager: StreamManager,
    stream_id: str,
    *,
    target: float = DEFAULT_TARGET_DURATION,
    metrics: Metrics | None = None,
    plans: SegmentPlans | None = None,
) -> Response:
    """The stream's media playlist (404 saying why for a format HLS is not served for)."""
    try:
        info = await manager.find(stream_id)  # stat, or found in the tier (docs/tiering.md)
        kind = await _kind(manager, info)
        segments = await (plans or SegmentPlans()).get(manager, info, target)
    except MmstreamError as exc:
        return _count(metrics, exc)
    ended = info.status is StreamStatus.READY
    body = media_playlist(
        segments,
        target_duration=target,
        ended=ended,
        uri=lambda s: f"hls/{info.generation}-{s.sequence}.{kind.extension}",
    ).encode()
    headers = [("Content-Type", PLAYLIST_TYPE), ("Content-Length", str(len(body))),
               ("Cache-Control", "max-age=60" if ended else "max-age=1"), _NOSNIFF]  # fmt: skip
    return Response(200, headers, body)


async def segment_response(
    manager: StreamManager,
    stream_id: str,
    name: str,
    request_headers: Mapping[str, str],
    *,
    target: float = DEFAULT_TARGET_DURATION,
    metrics: Metrics | None = None,
    plans: SegmentPlans | None = None,
) -> Response:
    """One packed-audio segment; 404 for one that does not exist (yet)."""
    try:
        match = _SEGMENT.fullmatch(name)
        if match is None:
            raise StreamNotFoundError(f"no segment {name[:64]!r}")
        generation, sequence = match.group(1), int(match.group(2))
        await manager.find(stream_id)  # known here, or found in the tier
        info = manager.stat(stream_id, generation=generation)
        kind = await _kind(manager, info)
        if kind.extension != match.group(3):
            raise StreamNotFoundError(f"no segment {name!r}: this stream's are .{kind.extension}")
        segment = next(
            (
                s
                for s in await (plans or SegmentPlans()).get(manager, info, target)
                if s.sequence == sequence
            ),
            None,
        )
        if segment is None:
            raise StreamNotFoundError(f"no segment {sequence} of {stream_id} (yet)")
        etag = f'"{generation}-{sequence}"'
        headers = [("Content-Type", kind.content_type), ("Cache-Control", IMMUTABLE),
                   ("ETag", etag), _NOSNIFF]  # fmt: skip
        if etag in (request_headers.get("if-none-match") or ""):
            return Response(304, headers)
        data = await manager.read(
            stream_id, segment.start, segment.stop - segment.start, generation=generation
        )
    except MmstreamError as exc:
        return _count(metrics, exc)
    body = packed_audio_segment(data, segment.time)
    if metrics is not None:
        metrics.bytes_out.labels("http").inc(len(body))
    return Response(200, [*headers, ("Content-Length", str(len(body)))], body)
