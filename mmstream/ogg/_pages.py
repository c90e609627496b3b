"""Ogg pages (RFC 3533), read incrementally: the one page walker every Ogg reader uses.

:class:`OggPages` is fed a stream's bytes in order, in pieces of any size, and reports each
page whose head is complete as an :class:`OggPage`. A page's body is skipped, not buffered,
unless it is a *header page* — a beginning-of-stream page, or one with granule position 0
or -1 (the codec headers of Opus, Vorbis, FLAC and Speex are on such pages) — whose body
comes whole: codec headers are what readers look into, and audio is what they skip. So
memory stays at one page whatever the stream's length. Bytes that are not a page are
skipped up to the next capture pattern.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .._chunks import Chunked

__all__ = ["BOS", "CONTINUED", "EOS", "HEAD_SIZE", "OggPage", "OggPages"]

#: Header type flags.
CONTINUED, BOS, EOS = 0x01, 0x02, 0x04
#: Bytes of a page head before its segment table.
HEAD_SIZE = 27


class OggPage(NamedTuple):
    """One page: where it starts in the stream, its head fields, its raw head, and its body
    (whole for a header page, else empty: see the module docstring)."""

    offset: int
    flags: int
    granule: int
    serial: int
    head: bytes
    body: bytes

    @property
    def sequence(self) -> int:
        return int.from_bytes(self.head[18:22], "little")

    @property
    def is_header(self) -> bool:
        """A page whose body is given: BOS, or granule 0 or -1 (no packet ends on it)."""
        return bool(self.flags & BOS) or self.granule in (0, -1)


class OggPages(Chunked[OggPage]):
    """Feed bytes with their absolute offset (:meth:`feed`); pages are appended to ``out``."""

    def _step(self, out: list[OggPage]) -> int:
        buf = self._buffer
        if len(buf) < HEAD_SIZE:
            return 0
        if buf[:4] != b"OggS":
            at = buf.find(b"OggS", 1)  # lost: resynchronise on the next capture pattern
            return len(buf) - 3 if at < 0 else at
        head = HEAD_SIZE + buf[26]
        if len(buf) < head:
            return 0
        body = sum(buf[HEAD_SIZE:head])
        flags = buf[5]
        granule, serial = struct.unpack_from("<qI", buf, 6)
        if flags & BOS or granule in (0, -1):
            if len(buf) < head + body:
                return 0
            page = OggPage(self._buffer_at, flags, granule, serial, bytes(buf[:head]),
                           bytes(buf[head : head + body]))  # fmt: skip
            out.append(page)
            return head + body
        out.append(OggPage(self._buffer_at, flags, granule, serial, bytes(buf[:head]), b""))
        self._skip = body
        return head
