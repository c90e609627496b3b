"""``GET /streams/{id}/index.m3u8`` and ``GET /streams/{id}/hls/{segment}``: HLS answers
from the cache (the decisions are in :mod:`.hls` and :mod:`.llhls`; this module reads the
manager and waits for it).

A segment's name carries the stream's generation (``<generation>-<n>.mp3``, a part
``<generation>-<n>.<k>.mp3``; for fMP4 ``.m4s``, and the initialisation segment
``<generation>-init.mp4``): a stream deleted and created again under the same id has
other URIs, so a segment or part URI names the same bytes forever and is served
``immutable`` with a strong ``ETag``. Playlists are short-lived: ``max-age=1`` while the
stream grows, a minute once it is finished. A blocking reload (``?_HLS_msn=``) is held
until its part is final and its answer stays true for that query, so a cache in front may
keep it for three target durations (it keys on the whole URL, query included).
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping

import attrs
import trio

from ..audio import detect_format
from ..errors import InvalidArgumentError, MmstreamError, StreamNotFoundError
from ..metrics import Metrics
from ..streams import StreamInfo, StreamManager, StreamStatus
from .hls import (
    DEFAULT_TARGET_DURATION,
    OPUS_CONTAINERS,
    Boundaries,
    HlsKind,
    LowLatency,
    MediaPlan,
    hls_kind,
    media_playlist,
    plan_media,
)
from .llhls import (
    PART_TARGET,
    BlockingBudget,
    Readiness,
    advance_part_limit,
    low_latency_parts,
    parse_directives,
    part_hold_back,
    parts_per_segment,
    readiness,
)
from .playback import Response, error_response

__all__ = ["PLAYLIST_TYPE", "SegmentPlans", "playlist_response", "segment_response"]

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"
_SEGMENT = re.compile(r"([0-9a-f]{16})-(\d{1,9}|init)(?:\.(\d{1,3}))?\.(mp3|aac|m4s|mp4)")
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
#: Bytes read to find an Ogg or WebM stream's codec: its first page, or up to its Tracks.
_HEADER_READ = 64 * 1024


async def _kind(manager: StreamManager, info: StreamInfo) -> HlsKind:
    """From the stream's first bytes, which never change: the initialisation segment an
    fMP4 stream's first header gives stays its own when a later chain brings another."""
    head = await manager.read(info.stream_id, 0, 64, generation=info.generation)
    fmt = detect_format(head)
    if fmt in OPUS_CONTAINERS:
        head = await manager.read(info.stream_id, 0, _HEADER_READ, generation=info.generation)
    found = hls_kind(fmt, head)
    if isinstance(found, str):
        raise StreamNotFoundError(found)
    return found


@attrs.define
class _Known:
    size: int
    status: StreamStatus
    boundaries: Boundaries
    plan: MediaPlan


class SegmentPlans:
    """The segment and part plans of the streams asked for lately, by stream, generation
    and target: every listener of a stream asks for the same plan until its next write,
    and a finished stream's never changes. A growing stream's plan is carried on from the
    last one (its boundaries are final, only new ones are sought), so a write costs the
    parts it adds, not the stream's length. At most ``limit`` streams and ``boundaries``
    boundaries in all are kept (a day of audio is 216,000 parts: ~13 MiB with its segments
    and playlist), the least recently asked for dropped first."""

    def __init__(
        self, limit: int = 256, part_target: float = PART_TARGET, boundaries: int = 2_000_000
    ) -> None:
        self._limit = limit
        self._boundaries = boundaries
        self.part_target = part_target
        self._plans: OrderedDict[tuple[str, str, float], _Known] = OrderedDict()
        #: Each plan's playlist, made once: every listener woken by one write gets it.
        self._bodies: weakref.WeakKeyDictionary[MediaPlan, bytes] = weakref.WeakKeyDictionary()

    def playlist(self, plan: MediaPlan, render: Callable[[MediaPlan], bytes]) -> bytes:
        """``render(plan)``, once per plan (a playlist is a function of its plan; the
        caller's ``render`` must depend on nothing else that changes)."""
        body = self._bodies.get(plan)
        if body is None:
            body = self._bodies[plan] = render(plan)
        return body

    def per_segment(self, target: float) -> int:
        return parts_per_segment(target, self.part_target)

    async def get(self, manager: StreamManager, info: StreamInfo, target: float) -> MediaPlan:
        key = (info.stream_id, info.generation, target)
        known = self._plans.get(key)
        if known is not None:
            self._plans.move_to_end(key)
            if (known.size, known.status) == (info.size, info.status):
                return known.plan
        # The last boundary is sought again: the others are final.
        first = max(len(known.boundaries) - 1, 0) if known is not None else 0
        seeks = await manager.boundaries(
            info.stream_id, target, parts=self.per_segment(target), first=first,
            generation=info.generation,
        )  # fmt: skip
        known = self._plans.get(key)  # another request may have carried it on meanwhile
        boundaries = known.boundaries if known is not None else Boundaries()
        if len(boundaries) < first:  # dropped and begun again meanwhile: start over
            self._plans.pop(key, None)
            return await self.get(manager, info, target)
        del boundaries.times[first:], boundaries.offsets[first:], boundaries.walls[first:]
        boundaries.extend([(s.time, s.offset, s.wall) for s in seeks])
        end_time = seeks[0].duration if seeks else 0.0
        complete = info.status is StreamStatus.READY
        plan = plan_media(
            boundaries,
            per_segment=self.per_segment(target),
            end_time=end_time,
            end_offset=info.size,
            complete=complete,
            known=() if known is None or known.plan.complete else known.plan.segments,
        )
        self._plans[key] = _Known(info.size, info.status, boundaries, plan)
        self._plans.move_to_end(key)
        held = sum(len(k.boundaries) for k in self._plans.values())
        while len(self._plans) > 1 and (len(self._plans) > self._limit or held > self._boundaries):
            _, dropped = self._plans.popitem(last=False)  # the least recently asked for
            held -= len(dropped.boundaries)
        return plan


def _unavailable(reason: str) -> Response:
    body = f"unavailable: {reason}\n".encode()
    return Response(503, [("Content-Type", "text/plain; charset=utf-8"),
                          ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                          ("Retry-After", "1"), _NOSNIFF], body)  # fmt: skip


class _Waited(Exception):
    """Why a held request is answered ``503`` (over the budget, or timed out)."""


async def _hold_until(
    manager: StreamManager,
    info: StreamInfo,
    plan: MediaPlan,
    ready: Callable[[MediaPlan], bool],
    *,
    target: float,
    plans: SegmentPlans,
    budget: BlockingBudget,
    client: str,
) -> MediaPlan:
    """The stream's plan once ``ready`` says so or the stream is complete, waiting at most
    three target durations (RFC 8216bis §6.2.5.2) within ``budget``; else :class:`_Waited`."""
    with budget.hold(client) as allowed:
        if not allowed:
            raise _Waited("too many requests are waiting for parts; retry")
        with trio.move_on_after(3 * target):
            while not (plan.complete or ready(plan)):
                info = await manager.wait_for_data(
                    info.stream_id, info.size, generation=info.generation
                )
                plan = await plans.get(manager, info, target)
            return plan
    raise _Waited(f"the part asked for did not come within {3 * target:g} s")


def _playlist(
    plan: MediaPlan, generation: str, kind: HlsKind, target: float, plans: SegmentPlans
) -> bytes:
    low_latency = None
    parts = low_latency_parts(plan, plans.part_target)
    if parts is not None:
        next_part = plan.next_part
        low_latency = LowLatency(
            parts,
            part_target=plans.part_target,
            part_hold_back=part_hold_back(plans.part_target),
            uri=lambda p: f"hls/{generation}-{p.sequence}.{p.index}.{kind.extension}",
            hint=None if next_part is None else
            f"hls/{generation}-{next_part[0]}.{next_part[1]}.{kind.extension}",
        )  # fmt: skip
    return media_playlist(
        plan.segments,
        target_duration=target,
        ended=plan.complete,
        uri=lambda s: f"hls/{generation}-{s.sequence}.{kind.extension}",
        low_latency=low_latency,
        init=None if kind.track is None else f"hls/{generation}-init.mp4",
    ).encode()


async def playlist_response(
    manager: StreamManager,
    stream_id: str,
    *,
    query: str = "",
    client: str = "",
    target: float = DEFAULT_TARGET_DURATION,
    metrics: Metrics | None = None,
    plans: SegmentPlans | None = None,
    budget: BlockingBudget | None = None,
) -> Response:
    """The stream's media playlist (404 saying why for a format HLS is not served for).
    With delivery directives (``_HLS_msn``, ``_HLS_part``) a live stream's is held until
    it holds what they ask for (LL-HLS blocking reload)."""
    plans = plans or SegmentPlans()
    try:
        directive = parse_directives(query)
        info = await manager.find(stream_id)  # stat, or found in the tier (docs/tiering.md)
        kind = await _kind(manager, info)
        plan = await plans.get(manager, info, target)
        if directive is not None:
            per_segment = plans.per_segment(target)
            limit = advance_part_limit(plans.part_target)
            match readiness(plan, directive, per_segment, limit):
                case Readiness.TOO_FAR:
                    raise InvalidArgumentError(
                        f"_HLS_msn={directive.msn} _HLS_part={directive.part} is further "
                        "ahead than the playlist will be soon (RFC 8216bis 6.2.5.2)"
                    )
                case Readiness.WAIT:
                    plan = await _hold_until(
                        manager, info, plan,
                        lambda p: readiness(p, directive, per_segment, limit) is Readiness.NOW,
                        target=target, plans=plans, budget=budget or BlockingBudget(),
                        client=client,
                    )  # fmt: skip
    except MmstreamError as exc:
        return error_response(exc, metrics)
    except _Waited as exc:
        return _unavailable(str(exc))
    body = plans.playlist(plan, lambda p: _playlist(p, info.generation, kind, target, plans))
    if plan.complete:
        cache = "max-age=60"
    elif directive is not None:
        cache = f"public, max-age={3 * target:g}"
    else:
        cache = "max-age=1"
    headers = [("Content-Type", PLAYLIST_TYPE), ("Content-Length", str(len(body))),
               ("Cache-Control", cache), _NOSNIFF]  # fmt: skip
    return Response(200, headers, body)


async def segment_response(
    manager: StreamManager,
    stream_id: str,
    name: str,
    request_headers: Mapping[str, str],
    *,
    client: str = "",
    target: float = DEFAULT_TARGET_DURATION,
    metrics: Metrics | None = None,
    plans: SegmentPlans | None = None,
    budget: BlockingBudget | None = None,
) -> Response:
    """One segment or part (or an fMP4 stream's initialisation segment); 404 for one that
    does not exist (yet). The part being written (the preload hint's) is held until it is
    final."""
    plans = plans or SegmentPlans()
    try:
        match = _SEGMENT.fullmatch(name)
        if match is None:
            raise StreamNotFoundError(f"no segment {name[:64]!r}")
        generation, number, part, extension = match.groups()
        await manager.find(stream_id)  # known here, or found in the tier
        info = manager.stat(stream_id, generation=generation)
        kind = await _kind(manager, info)
        init = kind.init if (number, part, extension) == ("init", None, "mp4") else None
        if init is not None:
            return _segment_body(f'"{generation}-init"', kind, init, request_headers, metrics)
        if kind.extension != extension or number == "init":
            raise StreamNotFoundError(f"no segment {name!r}: this stream's are .{kind.extension}")
        sequence, index = int(number), None if part is None else int(part)
        plan = await plans.get(manager, info, target)
        if index is not None and plan.next_part == (sequence, index):
            plan = await _hold_until(
                manager, info, plan, lambda p: p.part(sequence, index) is not None,
                target=target, plans=plans, budget=budget or BlockingBudget(), client=client,
            )  # fmt: skip
        found = plan.segment(sequence) if index is None else plan.part(sequence, index)
        what = f"segment {sequence}" if index is None else f"part {sequence}.{index}"
        if found is None:
            raise StreamNotFoundError(f"no {what} of {stream_id} (yet)")
        tag = f"{sequence}" if index is None else f"{sequence}.{index}"
        etag = f'"{generation}-{tag}"'
        if etag in (request_headers.get("if-none-match") or ""):
            return _segment_body(etag, kind, b"", request_headers, metrics)
        data = await manager.read(
            stream_id, found.start, found.stop - found.start, generation=generation
        )
        body = kind.segment(data, found)
        if isinstance(body, str):
            raise StreamNotFoundError(f"no {what} of {stream_id}: {body}")
    except MmstreamError as exc:
        return error_response(exc, metrics)
    except _Waited as exc:
        return _unavailable(str(exc))
    return _segment_body(etag, kind, body, request_headers, metrics)


def _segment_body(
    etag: str,
    kind: HlsKind,
    body: bytes,
    request_headers: Mapping[str, str],
    metrics: Metrics | None,
) -> Response:
    """An immutable segment's answer: ``304`` if the client has it (``If-None-Match``)."""
    headers = [("Content-Type", kind.content_type), ("Cache-Control", IMMUTABLE),
               ("ETag", etag), _NOSNIFF]  # fmt: skip
    if etag in (request_headers.get("if-none-match") or ""):
        return Response(304, headers)
    if metrics is not None:
        metrics.bytes_out.labels("http").inc(len(body))
    return Response(200, [*headers, ("Content-Length", str(len(body)))], body)
