"""The walker every incremental container parser stands on: bytes in, in pieces of any size,
payloads skipped rather than buffered, at most one head of unconsumed bytes kept.

Shared by the Ogg page, MPEG frame and EBML element iterators (:mod:`mmstream.ogg`,
:mod:`mmstream.mpeg`, :mod:`mmstream.ebml`), which the sync parsers
(:mod:`mmstream.audio_sync`) and the time parsers (:mod:`mmstream.media`) read through, so
each only says how one head is read (:meth:`Chunked._step`).
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["HEADER_LIMIT", "Chunked"]

#: A header larger than this is not kept (the stream is then served as raw bytes).
HEADER_LIMIT = 1024 * 1024

T = TypeVar("T")


class Chunked(Generic[T]):
    """Shared bookkeeping: bytes still to skip, and a small buffer of unconsumed bytes.
    What a step finds goes to the ``out`` list of :meth:`feed` (sync points, pages)."""

    def __init__(self) -> None:
        self._skip = 0
        self._buffer = bytearray()
        self._buffer_at = 0  # absolute offset of _buffer[0]
        #: While not None, every consumed byte is also kept here (the header being read).
        self._collect: bytearray | None = None
        self.header: bytes | None = None
        self.header_at = 0  # where the header being kept begins
        self.header_starts: list[int] | None = None  # where each began, if asked

    def feed(self, data: bytes, start: int, out: list[T]) -> None:
        view = memoryview(data)
        if self._skip:
            taken = min(self._skip, len(view))
            if self._collect is not None:
                self._collect += view[:taken]
            self._skip -= taken
            view = view[taken:]
            start += taken
        if not view:
            return
        if not self._buffer:
            self._buffer_at = start
        self._buffer += view
        while self._buffer:
            if self._skip:  # a payload: drop what is buffered of it
                taken = min(self._skip, len(self._buffer))
                self._consume(taken)
                self._skip -= taken
                continue
            used = self._step(out)
            if used == 0:
                return  # need more bytes
            self._consume(used)

    @property
    def waiting_at(self) -> int | None:
        """The offset of a head begun but not complete (its bytes are buffered), if any."""
        return self._buffer_at if self._buffer and not self._skip else None

    def _consume(self, count: int) -> None:
        if self._collect is not None:
            self._collect += self._buffer[:count]
            if len(self._collect) > HEADER_LIMIT:
                self._collect = None  # too big to keep: served without a header
                self._give_up_header()
        del self._buffer[:count]
        self._buffer_at += count

    def _give_up_header(self) -> None:
        self.header = b""

    def _step(self, out: list[T]) -> int:
        """Look at ``_buffer``; return how many bytes it consumed (0: need more), and set
        ``_skip`` to skip a payload beyond them."""
        raise NotImplementedError
