"""Titles in a source's Ogg stream, the one way both ingest routes handle them.

An Icecast source (``PUT``/``SOURCE``) and a WebSocket upload both pass their bytes through
:class:`SourceTitles` before they are stored. For Ogg Opus and Vorbis (docs/icecast.md,
*Titles in Ogg*) it does two things with one :class:`~mmstream.ogg.OggChainer`:

- it *hears* the titles the source gives itself, in the comment header of each new chained
  logical stream (as ices2 and Liquidsoap send them), and makes them the stream's, as if set
  through ``/admin/metadata`` (:meth:`.FanoutHub.set_title`), beginning at the end of the
  bytes that carried them;
- for an Icecast source only, it chains the stream's title into the bytes when it changes.
  A WebSocket upload is stored as sent: its offsets are its client's.

A WebSocket upload arrives as many ``append`` requests, maybe over several connections, each
a binding of its own; :class:`UploadTitles` keeps one reader per stream across them, taken
up again by a binding that starts where the last one stopped (else a new reader starts
there: the page walker finds the next page).

A source chaining at every page cannot rewrite the titles record 1,000 times a second nor
push the history (its newest 100) out in a blink: a heard title becomes the stream's at most
every :data:`HEARD_INTERVAL` seconds, the newest winning, and the last one when the source
ends.
"""

from __future__ import annotations

import time

from ..ogg import OggChainer
from ..streams import MAX_TITLE_LENGTH, StreamManager, StreamStatus
from ._fanout import FanoutHub

__all__ = ["HEARD_INTERVAL", "SourceTitles", "UploadTitles"]

#: Seconds between two titles heard in one source's stream becoming the stream's.
HEARD_INTERVAL = 1.0


class SourceTitles:
    """One source's bytes on their way to one stream (``generation``): :meth:`feed` each
    piece and store what it returns, then :meth:`settle`; at a clean end, store
    :meth:`flush`'s bytes and :meth:`settle` with ``last``."""

    def __init__(
        self,
        manager: StreamManager,
        hub: FanoutHub,
        stream_id: str,
        generation: str,
        *,
        chain: bool,
        ogg: bool | None = None,
    ) -> None:
        self._manager = manager
        self._hub = hub
        self._stream_id = stream_id
        self._generation = generation
        self._chain = chain
        self._chainer = OggChainer(title_limit=MAX_TITLE_LENGTH, chain=chain, ogg=ogg)
        self._heard: str | None = None  # the source's own title, not yet made the stream's
        self._heard_at = -HEARD_INTERVAL
        #: Where the next piece goes (kept for a reader of uploads only).
        self.position = 0

    def feed(self, piece: bytes) -> bytes:
        """The bytes to store for ``piece`` (``piece`` itself unless a title is chained, or
        the stream is not Ogg: then at no cost but this call)."""
        if self._chainer.passing:
            return piece
        title = self._heard
        if title is None and self._chain:
            title = self._manager.current_title(self._stream_id, generation=self._generation)
        piece = self._chainer.feed(piece, title)
        self._heard = self._chainer.take_heard() or self._heard
        return piece

    def read(self, piece: bytes) -> None:
        """An upload's ``piece``, stored as it is at :attr:`position`: heard only."""
        self.position += len(piece)
        self.feed(piece)

    def flush(self) -> bytes:
        """What the chainer still holds (a first few bytes, an incomplete page head), for a
        source that ended cleanly."""
        return self._chainer.flush()

    async def settle(self, *, last: bool = False) -> None:
        """Once the bytes fed are stored: the newest title heard becomes the stream's, if
        :data:`HEARD_INTERVAL` has passed since the last one did (``last``: the source
        ended, so now)."""
        now = time.monotonic()
        if self._heard is not None and (last or now - self._heard_at >= HEARD_INTERVAL):
            title, self._heard, self._heard_at = self._heard, None, now
            await self._hub.set_title(self._stream_id, title)


class UploadTitles:
    """The readers of the WebSocket uploads' Ogg titles, one per live stream (``stream id,
    generation``), shared by every connection: a server's uploads, bound one ``append`` at
    a time."""

    def __init__(self, manager: StreamManager, hub: FanoutHub) -> None:
        self._manager = manager
        self._hub = hub
        self._readers: dict[tuple[str, str], SourceTitles] = {}
        self._pruned_at = 0  # readers after the last prune

    async def bound(self, stream_id: str, generation: str, offset: int) -> SourceTitles:
        """The reader for a binding whose first byte goes at ``offset``: the stream's, if it
        stopped there; else a new one, Ogg or not as the stream's first bytes say."""
        reader = self._readers.get((stream_id, generation))
        if reader is not None and reader.position == offset:
            return reader
        self._prune()
        ogg = None
        if offset >= 4:
            head = await self._manager.read(stream_id, 0, 4, generation=generation)
            ogg = head == b"OggS"
        reader = SourceTitles(self._manager, self._hub, stream_id, generation, chain=False, ogg=ogg)
        reader.position = offset
        self._readers[(stream_id, generation)] = reader
        return reader

    def ended(self, stream_id: str, generation: str) -> None:
        """The upload was finalized: its reader is done."""
        self._readers.pop((stream_id, generation), None)

    def _prune(self) -> None:
        """Forget the readers of streams no longer uploading (deleted, expired, finished
        without a ``finalize`` of their own), once the readers have doubled: at most one
        look-up per reader and per binding, on average."""
        if len(self._readers) < max(16, 2 * self._pruned_at):
            return
        live = {
            (info.stream_id, info.generation)
            for info in self._manager.list()
            if info.status is StreamStatus.UPLOADING
        }
        self._readers = {key: r for key, r in self._readers.items() if key in live}
        self._pruned_at = len(self._readers)
