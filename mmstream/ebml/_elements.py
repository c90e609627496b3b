"""EBML elements, read incrementally: the one element walker every WebM/Matroska reader uses.

:class:`EbmlElements` is fed a stream's bytes in order, in pieces of any size, and reports
each element whose head (id and size) is complete as an :class:`EbmlElement`, in stream
order: a flat walk, no nesting kept, because live streams need none. An element the reader
is told to *enter* is reported and its children follow it; so is a ``Segment`` or
``Cluster`` of unknown size (MediaRecorder and live encoders write them so: they cannot be
skipped, only walked). An element it is told to *read* comes with the first bytes of its
body, up to a limit per id (a number, a block's track and time, a whole ``Tracks``); any
other is reported and its body skipped, not buffered. So memory stays at one element head
plus what is read, whatever the stream's length. Bytes that are not an element (garbage, a
source cut mid-element), and an element of unknown size that may not have one, are skipped
up to the next ``Cluster`` id.

With ``keep_header`` the reader also keeps what a decoder needs before any cluster — every
byte from a stream's EBML header up to its first ``Cluster`` — with the ``Segment``'s size
made unknown, since a late listener gets only part of the segment (:mod:`mmstream.audio_sync`
serves it). A new EBML header after data (a new source) starts a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

from .._chunks import Chunked

__all__ = ["EbmlElement", "EbmlElements", "ElementId", "vint"]


class ElementId:
    """The Matroska element ids mmstream reads (ids keep their length marker bits): plain
    ints, as element ids are compared in the walk of every element of a stream."""

    EBML: Final = 0x1A45DFA3
    SEGMENT: Final = 0x18538067
    INFO: Final = 0x1549A966
    TIMECODE_SCALE: Final = 0x2AD7B1
    TRACKS: Final = 0x1654AE6B
    TRACK_ENTRY: Final = 0xAE
    TRACK_NUMBER: Final = 0xD7
    CODEC_ID: Final = 0x86
    CODEC_PRIVATE: Final = 0x63A2
    AUDIO: Final = 0xE1
    CHANNELS: Final = 0x9F
    CLUSTER: Final = 0x1F43B675
    #: The cluster's time, its first child.
    TIMECODE: Final = 0xE7
    BLOCK_GROUP: Final = 0xA0
    BLOCK: Final = 0xA1
    BLOCK_DURATION: Final = 0x9B
    SIMPLE_BLOCK: Final = 0xA3


#: Master elements that may be of unknown size: always entered, as they cannot be skipped.
_UNKNOWN_SIZE_ALLOWED = frozenset({ElementId.SEGMENT, ElementId.CLUSTER})
_CLUSTER_ID = ElementId.CLUSTER.to_bytes(4, "big")
_UNKNOWN_SIZE_8 = b"\x01\xff\xff\xff\xff\xff\xff\xff"

Bytes = bytes | bytearray | memoryview


def vint(buf: Bytes, at: int, *, keep_marker: bool = False) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-length integer at ``at``; ``None`` if
    incomplete; length 0 if invalid. An all-ones size is returned as -1 (unknown). Ids
    keep their marker bit (``keep_marker``); sizes and numbers do not."""
    if at >= len(buf):
        return None
    first = buf[at]
    if first == 0:
        return 0, 0
    length = 9 - first.bit_length()
    if at + length > len(buf):
        return None
    value = int.from_bytes(buf[at : at + length], "big")
    if keep_marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    if value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def _element_head(buf: bytearray) -> tuple[int, int, int] | None:
    """``(id, head length, size)`` of the element starting ``buf``: ``None`` if
    incomplete, head length 0 if invalid, size -1 if unknown. (:func:`vint` twice, inline:
    this runs once per element of every stream.)"""
    have = len(buf)
    if not have:
        return None
    first = buf[0]
    if first == 0:
        return 0, 0, 0
    id_length = 9 - first.bit_length()
    if have <= id_length:
        return None
    if id_length > 4:
        return 0, 0, 0
    marker = buf[id_length]
    if marker == 0:
        return 0, 0, 0
    head = id_length + 9 - marker.bit_length()
    if have < head:
        return None
    ident = first if id_length == 1 else int.from_bytes(buf[:id_length], "big")
    all_ones = (1 << (7 * (head - id_length))) - 1
    size = marker if head == id_length + 1 else int.from_bytes(buf[id_length:head], "big")
    size &= all_ones
    return ident, head, -1 if size == all_ones else size


class EbmlElement(NamedTuple):
    """One element: where its id begins in the stream, its id, the length of its id and
    size, its size (-1: unknown), and, if it is one the reader reads, the first bytes of
    its body (else ``None``: an entered element's children follow it)."""

    offset: int
    id: int
    head: int
    size: int
    body: bytes | None = None


class EbmlElements(Chunked[EbmlElement]):
    """Feed bytes with their absolute offset (:meth:`feed`); elements are appended to
    ``out``. ``enter``: the ids whose children are walked; ``read``: id → how many bytes of
    its body to give; ``keep_header``: keep :attr:`header` (see the module docstring)."""

    def __init__(
        self,
        *,
        enter: frozenset[int] = frozenset(),
        read: Mapping[int, int] | None = None,
        keep_header: bool = False,
    ) -> None:
        super().__init__()
        self._enter = enter
        self._read = dict(read or {})
        self._keep_header = keep_header
        if keep_header:
            self._collect = bytearray()
        self._segment_size_at: int | None = None  # where, in the header, a size to patch is
        self._lost = False  # skipping to the next Cluster id

    def _step(self, out: list[EbmlElement]) -> int:
        buf = self._buffer
        if self._lost:  # only a Cluster id ends it (not what is left of the bytes skipped)
            at = buf.find(_CLUSTER_ID)
            if at < 0:
                return max(len(buf) - 3, 0)
            if at:
                return at
            self._lost = False
        found = _element_head(buf)
        if found is None:
            return 0
        ident, head, size = found
        if head == 0:
            return self._resync()
        if ident in self._enter or (size < 0 and ident in _UNKNOWN_SIZE_ALLOWED):
            self._header_at_element(ident, head)
            out.append(EbmlElement(self._buffer_at, ident, head, size))
            return head
        if size < 0:
            return self._resync()
        body = None
        limit = self._read.get(ident)
        if limit is not None:
            end = head + min(size, limit)
            if len(buf) < end:
                return 0
            body = bytes(buf[head:end])
        self._header_at_element(ident, head)
        out.append(EbmlElement(self._buffer_at, ident, head, size, body))
        used = head + (len(body) if body is not None else 0)
        self._skip = head + size - used
        return used

    def _resync(self) -> int:
        """Lost (bad data, or a source cut mid-element): skip to the next Cluster id."""
        self._lost = True
        return 1

    def _header_at_element(self, ident: int, head: int) -> None:
        """With ``keep_header``: an element begins, its bytes not yet consumed (kept if the
        header is being kept)."""
        if not self._keep_header:
            return
        if ident == ElementId.EBML:  # a (new) stream begins
            if self._collect is None or self.header is not None:
                self._collect, self.header = bytearray(), None
                self.header_at = self._buffer_at
                if self.header_starts is not None:
                    self.header_starts.append(self._buffer_at)
        elif ident == ElementId.SEGMENT:
            if self._collect is not None and head == 12:  # a 4-byte id, an 8-byte size
                self._segment_size_at = len(self._collect) + 4
        elif ident == ElementId.CLUSTER and self._collect is not None:
            header = self._collect
            if self._segment_size_at is not None:
                # A late listener gets only part of the segment: its size is unknown to it.
                at = self._segment_size_at
                header[at : at + 8] = _UNKNOWN_SIZE_8
            self.header = bytes(header)
            self._collect = None
            self._segment_size_at = None
