"""Low-Latency HLS while a stream is live (RFC 8216bis §4.4.3.7-8, §6.2.5.2, §6.2.6), decided
without I/O: how finely segments are cut into parts, what a playlist request's delivery
directives (``_HLS_msn``, ``_HLS_part``) ask for, whether a plan answers them yet, and how
many requests may wait for one at once.

A player at the live edge asks for the playlist that will hold the *next* part and the
server holds the request until that part is final: the answer leaves the moment the part's
last bytes arrive, instead of at the player's next poll. A held request is a resource a
client makes the server keep, so it is bounded three ways: by time (three target durations,
then ``503``, as the spec says), by a server-wide count and by a count per client address
(:class:`BlockingBudget`; over it, ``503`` at once with ``Retry-After``). One HTTP/1.1
connection has one request in flight, so a connection holds at most one. Health checks are
other routes and never wait here.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl

import attrs

from ..config import DEFAULT_BLOCKED, DEFAULT_BLOCKED_PER_CLIENT
from ..errors import InvalidArgumentError
from .hls import MediaPlan, Part

__all__ = [
    "DEFAULT_BLOCKED",
    "DEFAULT_BLOCKED_PER_CLIENT",
    "PARTS_LISTED",
    "PART_TARGET",
    "BlockingBudget",
    "Directive",
    "Readiness",
    "advance_part_limit",
    "low_latency_parts",
    "parse_directives",
    "part_hold_back",
    "parts_per_segment",
    "readiness",
]

#: The longest a part may play (``EXT-X-PART-INF:PART-TARGET``), seconds.
PART_TARGET = 0.5
#: Complete segments whose parts a live playlist still lists (§4.4.4.9: older parts may go).
PARTS_LISTED = 3
#: The largest ``_HLS_msn``/``_HLS_part`` read (nine digits: a century of 4 s segments).
_MAX_DIGITS = 9


def parts_per_segment(target: float, part_target: float = PART_TARGET) -> int:
    """Parts per segment: cut at 80 % of the part target, because a part ends on the frame
    boundary nearest before its nominal end, so it may run up to a frame longer than
    nominal and must still be within the target (§4.4.4.9: a part's duration is at most
    ``PART-TARGET``). 4 s segments and 0.5 s parts: 10 parts of ~0.4 s."""
    if not 0 < part_target <= target:
        raise ValueError(f"part target {part_target!r} must be in (0, {target}]")
    return math.ceil(target / (part_target * 0.8) - 1e-9)


def part_hold_back(part_target: float = PART_TARGET) -> float:
    """``PART-HOLD-BACK``: three part targets behind the live edge (§4.4.3.8 says at least
    two, and three is what it recommends)."""
    return 3 * part_target


def advance_part_limit(part_target: float = PART_TARGET) -> int:
    """How many parts ahead of the playlist a request may ask for before it is a bad
    request (§6.2.5.2: three seconds' worth, or three parts if parts are longer)."""
    return math.floor(3 / part_target) if part_target < 1 else 3


@attrs.frozen
class Directive:
    """What a blocking playlist request waits for: segment ``msn`` complete, or (with
    ``part``) that part of it, or anything later."""

    msn: int = attrs.field(validator=attrs.validators.ge(0))
    part: int | None = attrs.field(default=None)


def _number(name: str, value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise InvalidArgumentError(f"{name} must be a non-negative integer, not {value[:20]!r}")
    if len(value) > _MAX_DIGITS:
        raise InvalidArgumentError(f"{name} {value[:20]} is out of range")
    return int(value)


def parse_directives(query: str) -> Directive | None:
    """The delivery directives in a playlist request's query (``None``: none, a plain
    reload). ``_HLS_skip`` is ignored: no delta updates are offered (no ``CAN-SKIP-UNTIL``).
    Anything malformed is a bad request with a one-line reason (§6.2.5.2: ``_HLS_part``
    without ``_HLS_msn`` too)."""
    try:
        fields = parse_qsl(query, keep_blank_values=True, max_num_fields=16)
    except ValueError as exc:
        raise InvalidArgumentError(f"query not understood: {exc}") from None
    found: dict[str, str] = {}
    for name, value in fields:
        if name in ("_HLS_msn", "_HLS_part"):
            if name in found:
                raise InvalidArgumentError(f"{name} is given twice")
            found[name] = value
    if "_HLS_msn" not in found:
        if "_HLS_part" in found:
            raise InvalidArgumentError("_HLS_part needs _HLS_msn")
        return None
    part = found.get("_HLS_part")
    return Directive(
        _number("_HLS_msn", found["_HLS_msn"]),
        None if part is None else _number("_HLS_part", part),
    )


def low_latency_parts(plan: MediaPlan, part_target: float = PART_TARGET) -> list[Part] | None:
    """The parts a live playlist lists (those of the last :data:`PARTS_LISTED` segments and
    of the one being written), or ``None``: no LL-HLS for this plan, a plain live playlist.
    That is so once the stream is complete, and when a part is longer than the part target
    (§4.4.4.9 forbids it): a container whose boundaries are further apart than a part (Ogg
    pages of a second) cannot be cut that finely. MP3 and AAC frames always can."""
    if plan.complete:
        return None
    parts = plan.recent_parts(PARTS_LISTED)
    if any(part.duration > part_target for part in parts):
        return None
    return parts


class Readiness(enum.Enum):
    """What a plan says to a directive: answer now, hold the request, or refuse it."""

    NOW = "now"
    WAIT = "wait"
    TOO_FAR = "too-far"


def readiness(plan: MediaPlan, directive: Directive, per_segment: int, limit: int) -> Readiness:
    """§6.2.5.2: a complete stream answers at once; a directive the plan already meets
    (the segment is listed, or the part or anything after it) too; one more than two
    segments past the last listed one, or more than ``limit`` parts past the last listed
    part, is a bad request; anything else waits."""
    if plan.complete:
        return Readiness.NOW
    last_segment = plan.segments[-1].sequence if plan.segments else -1
    last_part = plan.last_part or (0, -1)
    if directive.part is None:
        if directive.msn <= last_segment:
            return Readiness.NOW
        return Readiness.TOO_FAR if directive.msn > last_segment + 2 else Readiness.WAIT
    if (directive.msn, directive.part) <= last_part:
        return Readiness.NOW
    ahead = (directive.msn - last_part[0]) * per_segment + directive.part - last_part[1]
    too_far = directive.msn > last_segment + 2 or ahead > limit
    return Readiness.TOO_FAR if too_far else Readiness.WAIT


class BlockingBudget:
    """How many requests wait for a part at once: at most ``limit`` in all and
    ``per_client`` from one address. Pure bookkeeping: :meth:`hold` is entered around the
    wait and says ``False`` when the request may not wait (answer ``503`` at once)."""

    def __init__(
        self, limit: int = DEFAULT_BLOCKED, per_client: int = DEFAULT_BLOCKED_PER_CLIENT
    ) -> None:
        if min(limit, per_client) < 1:
            raise ValueError("blocking budgets must be at least 1")
        self.limit = limit
        self.per_client = per_client
        #: Requests waiting now, in all and by client address.
        self.held = 0
        self._by_client: Counter[str] = Counter()

    def held_by(self, client: str) -> int:
        return self._by_client[client]

    @contextmanager
    def hold(self, client: str) -> Iterator[bool]:
        if self.held >= self.limit or self._by_client[client] >= self.per_client:
            yield False
            return
        self._by_client[client] += 1
        self.held += 1
        try:
            yield True
        finally:
            self.held -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
