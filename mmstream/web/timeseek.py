"""``?t=`` and ``?at=`` on ``GET /streams/{id}``: which time a request asks for, decided
without I/O (as :mod:`.ranges` decides ``Range``).

- ``t=SECONDS``: media seconds from the stream's start (``t=90``, ``t=12.5``, or clock
  notation ``t=1:30``, ``t=1:02:03.5``); ``t=-SECONDS``: that long before the end (the live
  edge of an upload).
- ``at=ISO-8601``: the wall clock (``at=2026-12-04T10:00:00Z``; a time without an offset is
  UTC).

A query names at most one of them; a malformed or out-of-range value is the client's error
(400). A query without either is not a time seek (``None``): the request is answered as
before.
"""

from __future__ import annotations

import datetime
from urllib.parse import unquote

import attrs

from ..errors import InvalidArgumentError
from ..media import parse_clock

__all__ = ["TimeQuery", "asks_time", "parse_time_query"]


@attrs.frozen
class TimeQuery:
    """``seconds`` of media (negative: back from the end) or the wall clock ``at``."""

    seconds: float | None = None
    at: float | None = None


def _parse_instant(value: str) -> float:
    try:
        instant = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {value[:40]!r}") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=datetime.UTC)
    return instant.timestamp()


def asks_time(query: str) -> bool:
    """Whether the query names ``t`` or ``at`` (valid or not: :func:`parse_time_query`
    decides)."""
    return any(pair.partition("=")[0] in ("t", "at") for pair in query.split("&"))


def parse_time_query(query: str) -> TimeQuery | None:
    """The time a query string asks for; :class:`InvalidArgumentError` if it is malformed."""
    found: dict[str, str] = {}
    if not asks_time(query):
        return None
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name in ("t", "at"):
            if name in found or len(found):
                raise InvalidArgumentError("give one of t= and at=, once")
            found[name] = unquote(value)
    try:
        if "t" in found:
            return TimeQuery(seconds=parse_clock(found["t"]))
        return TimeQuery(at=_parse_instant(found["at"]))
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
