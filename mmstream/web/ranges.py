"""HTTP ``Range`` requests (RFC 9110 §14) decided without any I/O.

:func:`evaluate_range` takes the request's ``Range`` (and ``If-Range``) header values and what
is known about the stream, and returns what to send: the whole body, one part of it, or 416.
It never touches a socket or the cache, so every rule below has a synchronous test.

Choices, all allowed by RFC 9110:

- Only the ``bytes`` unit is understood; a ``Range`` in another unit is ignored (200).
- A ``bytes`` range that does not parse is "invalid" and answered 416 (§14.2).
- **Several ranges** (``bytes=0-1,5-9``) are answered with the whole body (200): a server may
  ignore ``Range`` (§14.2), and this avoids ``multipart/byteranges`` for a request no audio
  player sends, and the amplification tricks that come with many small overlapping ranges.
- ``If-Range`` is honoured by strong entity-tag or exact ``Last-Modified`` match; a validator
  that does not match (or a weak tag) means the range is ignored and the whole body is sent.

A **growing** stream (still UPLOADING) has no complete length yet:

- no ``Range``, or ``bytes=0-``: :class:`Live` — 200 without a length; the caller keeps
  sending as bytes arrive and ends the body at finalize (how a browser listens live);
- any other satisfiable range: a :class:`Partial` of the bytes that exist now, with
  ``Content-Range: bytes first-last/*``;
- a range starting at or past the current end: 416 without ``Content-Range`` (it has no
  complete length to state, and the range may be satisfiable a moment later).
"""

from __future__ import annotations

import re
from typing import TypeAlias

import attrs
from attrs import validators as v

__all__ = [
    "MAX_RANGE_HEADER",
    "Full",
    "IntRange",
    "Live",
    "Partial",
    "RangeDecision",
    "RangeSpec",
    "SuffixRange",
    "Unsatisfiable",
    "evaluate_range",
    "parse_range_header",
]

#: A ``Range`` header longer than this is not worth parsing; it is ignored (200).
MAX_RANGE_HEADER = 1024

_non_negative = v.ge(0)


@attrs.frozen
class IntRange:
    """``first-last`` or ``first-`` (``last`` is ``None``); positions are inclusive."""

    first: int = attrs.field(validator=_non_negative)
    last: int | None = attrs.field(default=None, validator=v.optional(_non_negative))


@attrs.frozen
class SuffixRange:
    """``-length``: the final ``length`` bytes."""

    length: int = attrs.field(validator=_non_negative)


RangeSpec: TypeAlias = IntRange | SuffixRange


@attrs.frozen
class Full:
    """200 with the whole body of ``size`` bytes."""

    size: int = attrs.field(validator=_non_negative)


@attrs.frozen
class Live:
    """200 for a growing stream: send from ``start`` without a length until it is finalized."""

    start: int = attrs.field(default=0, validator=_non_negative)


@attrs.frozen
class Partial:
    """206 with bytes ``[start, stop)``; ``complete_length`` is ``None`` while growing."""

    start: int = attrs.field(validator=_non_negative)
    stop: int = attrs.field()
    complete_length: int | None = attrs.field(default=None)

    @stop.validator
    def _check_stop(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value <= self.start:
            raise ValueError(f"empty or reversed part [{self.start}, {value})")

    @complete_length.validator
    def _check_complete(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and value < self.stop:
            raise ValueError(f"part ends at {self.stop}, past the length {value}")

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        total = "*" if self.complete_length is None else str(self.complete_length)
        return f"bytes {self.start}-{self.stop - 1}/{total}"


@attrs.frozen
class Unsatisfiable:
    """416; ``complete_length`` (when known) goes into ``Content-Range: bytes */N``."""

    complete_length: int | None = attrs.field(default=None)

    @property
    def content_range(self) -> str | None:
        if self.complete_length is None:
            return None
        return f"bytes */{self.complete_length}"


RangeDecision: TypeAlias = Full | Live | Partial | Unsatisfiable

# RFC 9110: ranges-specifier = range-unit "=" range-set; range-set = 1#range-spec, with
# optional whitespace around the commas. Digits only: no signs, no spaces inside a spec.
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_UNIT = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class _Invalid(Exception):
    """The bytes range-set does not parse."""


def parse_range_header(value: str) -> list[RangeSpec] | None:
    """Parse a ``Range`` value. ``None`` means "not a bytes range" (ignore it);
    :class:`ValueError` means a bytes range with invalid syntax."""
    unit, sep, range_set = value.partition("=")
    unit = unit.strip()
    if not sep or not _UNIT.fullmatch(unit):
        raise ValueError(f"not a range-specifier: {value!r}")
    if unit.lower() != "bytes":
        return None
    specs: list[RangeSpec] = []
    # An empty element of a #list (",,") is allowed and skipped; at least one must remain.
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:
            continue
        match = _SPEC.fullmatch(element)
        if match is None:
            raise ValueError(f"bad range {element!r}")
        first, last = match.groups()
        if first:
            if last and int(last) < int(first):
                raise ValueError(f"range {element!r} ends before it starts")
            specs.append(IntRange(int(first), int(last) if last else None))
        elif last:
            specs.append(SuffixRange(int(last)))
        else:
            raise ValueError("a range needs a first or a last position")
    if not specs:
        raise ValueError("empty range set")
    return specs


def _strong_match(if_range: str, etag: str | None) -> bool:
    return etag is not None and not if_range.startswith("W/") and if_range == etag


def _validator_matches(if_range: str, etag: str | None, last_modified: str | None) -> bool:
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        return _strong_match(if_range, etag)
    return last_modified is not None and if_range == last_modified


def _resolve(spec: RangeSpec, size: int) -> tuple[int, int] | None:
    """The half-open ``[start, stop)`` a spec selects from ``size`` bytes, or ``None``."""
    match spec:
        case IntRange(first=first, last=last):
            if first >= size:
                return None
            stop = size if last is None else min(last + 1, size)
            return first, stop
        case SuffixRange(length=length):
            if length == 0 or size == 0:
                return None
            return max(size - length, 0), size


def evaluate_range(
    range_header: str | None,
    size: int,
    *,
    growing: bool = False,
    if_range: str | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
) -> RangeDecision:
    """Decide the response to a GET of ``size`` bytes (so far, when ``growing``)."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    whole: RangeDecision = Live() if growing else Full(size)
    if range_header is None or len(range_header) > MAX_RANGE_HEADER:
        return whole
    if if_range is not None and not _validator_matches(if_range, etag, last_modified):
        return whole
    try:
        specs = parse_range_header(range_header)
    except ValueError:
        return Unsatisfiable(None if growing else size)
    if specs is None or len(specs) > 1:
        return whole
    spec = specs[0]
    if growing and spec == IntRange(0):
        return whole
    resolved = _resolve(spec, size)
    if resolved is None:
        return Unsatisfiable(None if growing else size)
    start, stop = resolved
    return Partial(start, stop, None if growing else size)
