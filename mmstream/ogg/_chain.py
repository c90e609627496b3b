"""Titles in Ogg: a new title starts a new chained logical stream (RFC 3533 §4) whose
comment header (Opus ``OpusTags``, Vorbis comment) carries ``TITLE=``, so players that read
Ogg comments (ffmpeg, mpv, VLC, browsers) show it, and a file of the stream stays a valid
chained Ogg that any reader can take from any chain's start.

:class:`OggChainer` sits between a source and the stream: it is fed the source's bytes as
they arrive and returns the bytes to store. When the title differs from the one last
written, it writes, before the next page that begins a packet:

1. an empty end-of-stream page closing the current logical stream (a page's head is out
   before the next one shows where the stream ends, so it cannot carry the flag itself);
2. the new chain's headers: the source's identification header as it is (``OpusHead``;
   Vorbis' identification and setup headers), and its comment header rebuilt with the
   title, on pages of a fresh random serial;

and from then on relabels every page of the source: the new serial, sequence numbers that
follow the new headers, granule positions that start again from the chain's start (for
Opus, from its pre-skip, so the decoder's restart costs the pre-skip's samples as at any
stream's start). Relabelling changes only fixed-size head fields: the CRC is patched
(:func:`~._write.patch_head`), so pages are never held for their body and the source's audio
goes out as it arrives. Only an incomplete page head (at most 282 bytes; a page on which no
packet ends, rare in audio, whole: :class:`~._pages.OggPages` reads such bodies) waits for
the rest of its piece, and only while a title is pending or pages are being relabelled.

A new logical stream from the source itself (a source that restarts its encoder, or a new
source resuming the stream) ends the relabelling; the current title is then chained after
its headers. Streams that are not Ogg Opus or Ogg Vorbis (a multiplexed Ogg, FLAC, Speex,
any other format) pass through unchanged.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from .._chunks import HEADER_LIMIT
from ._pages import BOS, CONTINUED, EOS, HEAD_SIZE, OggPage, OggPages
from ._write import crc, packets, patch_head, write_pages

__all__ = ["MAX_TITLE_BYTES", "OggChainer", "comment_packet", "comment_title"]

_OPUS_HEAD, _OPUS_TAGS = b"OpusHead", b"OpusTags"
_VORBIS_ID, _VORBIS_COMMENT = b"\x01vorbis", b"\x03vorbis"
#: The longest title written (UTF-8 bytes; cut at a character): titles are bounded where
#: they are set (1,024 characters), and the comment header is bounded here too.
MAX_TITLE_BYTES = 4096
#: Comments the title replaces in the source's own comment header.
_REPLACED = ("TITLE", "ARTIST")


def _printable(text: str) -> str:
    """Control characters (newlines included) become spaces, as in ICY titles: a title is
    one line in every player."""
    return "".join(" " if ch < " " or ch == "\x7f" else ch for ch in text)


def _comments(packet: bytes, magic: bytes) -> tuple[bytes, list[bytes]]:
    """The vendor string and the comments of a comment header; a damaged one gives none."""
    try:
        at = len(magic)
        (size,) = struct.unpack_from("<I", packet, at)
        vendor = packet[at + 4 : at + 4 + size]
        at += 4 + size
        (count,) = struct.unpack_from("<I", packet, at)
        at += 4
        found = []
        for _ in range(min(count, len(packet) // 4)):
            (size,) = struct.unpack_from("<I", packet, at)
            found.append(packet[at + 4 : at + 4 + size])
            at += 4 + size
        if at > len(packet):
            raise struct.error("comment past the packet's end")
    except struct.error:
        return b"mmstream", []
    return vendor, found


def _first(comments: list[bytes], name: bytes) -> str | None:
    """The first ``NAME=`` comment's value (names are case-insensitive, as Vorbis comments
    say), decoded leniently: a source's bytes are not trusted to be UTF-8."""
    prefix = name.upper() + b"="
    for comment in comments:
        if comment[: len(prefix)].upper() == prefix:
            return comment[len(prefix) :].decode("utf-8", "replace")
    return None


def comment_title(packet: bytes, limit: int) -> str | None:
    """The title a comment header (``OpusTags``, Vorbis comment) gives, as Icecast forms
    it (src/format_ogg.c, ``update_comments``): ``ARTIST - TITLE``, or whichever of the two
    is there; None if neither (or the packet is damaged). One line, at most ``limit``
    characters."""
    magic = _OPUS_TAGS if packet.startswith(_OPUS_TAGS) else _VORBIS_COMMENT
    if not packet.startswith(magic):
        return None
    _, comments = _comments(packet, magic)
    artist, title = _first(comments, b"ARTIST"), _first(comments, b"TITLE")
    parts = [part for part in (artist, title) if part is not None]
    if not parts:
        return None
    return _printable(" - ".join(parts))[:limit]


def comment_packet(original: bytes, title: str) -> bytes:
    """``original`` (an ``OpusTags`` or Vorbis comment header) with ``TITLE=title`` instead
    of its title and artist (the title names both, as Icecast's ``song`` does); its vendor
    and other comments kept."""
    magic = _OPUS_TAGS if original.startswith(_OPUS_TAGS) else _VORBIS_COMMENT
    vendor, comments = _comments(original, magic)
    kept = [c for c in comments if c.split(b"=", 1)[0].upper().decode("ascii", "replace")
            not in _REPLACED]  # fmt: skip
    text = _printable(title).encode("utf-8")[:MAX_TITLE_BYTES].decode("utf-8", "ignore")
    kept.append(b"TITLE=" + text.encode("utf-8"))
    out = bytearray(magic + struct.pack("<I", len(vendor)) + vendor)
    out += struct.pack("<I", len(kept))
    for comment in kept:
        out += struct.pack("<I", len(comment)) + comment
    if magic == _VORBIS_COMMENT:
        out += b"\x01"  # the framing bit
    return bytes(out)


class OggChainer:
    """Feed a source's bytes (:meth:`feed`, with the stream's current title); store what it
    returns. :meth:`flush` at the source's clean end returns what is still held.

    With ``chain=False`` it only reads: every piece comes back as it was fed, no title is
    chained, and the titles of the source's own chains are heard (:meth:`take_heard`) all
    the same: a WebSocket upload, whose offsets are its client's, must be stored as sent.
    ``ogg=True`` says the stream is Ogg without looking at its first bytes (an upload that
    resumes in the middle of one: the page walker finds the next page)."""

    def __init__(
        self,
        serials: Callable[[], int] | None = None,
        *,
        title_limit: int = MAX_TITLE_BYTES,
        chain: bool = True,
        ogg: bool | None = None,
    ) -> None:
        self._serials = serials or (lambda: secrets.randbits(32))
        self._title_limit = title_limit
        self._chains = chain
        self._heard: str | None = None  # the source's own title, not yet taken
        self._pages = OggPages()
        self._position = 0  # source bytes fed
        self._held = bytearray()
        self._held_at = 0  # source offset of _held[0]
        #: None: not known yet; False: not a stream this chains (passed through).
        self._ogg: bool | None = ogg
        # The source's current logical stream.
        self._serial: int | None = None
        self._codec = b""
        self._header: list[tuple[bytes, bytes]] = []
        self._header_size = 0
        self._in_data = False
        self._data_seen = False  # a data page of it was written
        self._preskip = 0
        self._granule = 0  # the source's last granule position
        # What was written last: the title chained, and how pages are relabelled.
        self._chained: str | None = None
        #: While pages are relabelled: the source's granule and sequence number where the
        #: chain began.
        self._relabel: tuple[int, int] | None = None
        self._first_sequence = 0  # the new chain's first data page's sequence number
        self._out_serial = 0
        self._out_sequence = 0  # the next page's sequence number as written
        self._out_granule = 0

    @property
    def passing(self) -> bool:
        """True once the stream is known not to be one this chains: bytes pass unchanged."""
        return self._ogg is False

    def feed(self, data: bytes, title: str | None) -> bytes:
        """Take the source's next bytes; return the bytes to store (fewer, more, or
        relabelled, as above; ``data`` itself when it only reads)."""
        if self._ogg is False:
            return data
        if not self._chains:
            self._feed(data, None)  # no title to chain: nothing is held, nothing written
            return data
        return self._feed(data, title)

    def _feed(self, data: bytes, title: str | None) -> bytes:
        start = self._position
        self._position += len(data)
        if self._ogg is None:
            self._held += data
            if len(self._held) < 4:
                return b""
            self._ogg = self._held.startswith(b"OggS")
            if not self._ogg:
                passed, self._held = bytes(self._held), bytearray()
                return passed
            data, start = bytes(self._held), self._held_at
            self._held = bytearray()
        found: list[OggPage] = []
        self._pages.feed(data, start, found)
        if not self._held:
            self._held_at = start
        self._held += data
        out = bytearray()
        for page in found:
            out += self._page(page, title)
            if self._heard is not None and self._chains:
                title = self._heard  # the source titled its chain: that title is current
        hold = self._relabel is not None or (title is not None and title != self._chained)
        waiting = self._pages.waiting_at if hold else None
        keep = 0 if waiting is None else max(0, self._position - waiting)
        cut = len(self._held) - min(keep, len(self._held))
        out += self._held[:cut]
        del self._held[:cut]
        self._held_at += cut
        return bytes(out)

    def take_heard(self) -> str | None:
        """The title of the source's latest logical stream, read from its comment header
        (see :func:`comment_title`), once: the caller makes it the stream's title, and feeds
        it as the title from then on, so no chain is written for it (it is in the bytes)."""
        heard, self._heard = self._heard, None
        return heard

    def flush(self) -> bytes:
        """The bytes still held (an incomplete page head at the source's end)."""
        out, self._held = bytes(self._held), bytearray()
        self._held_at = self._position
        return out

    # -- one page ------------------------------------------------------------------------

    def _page(self, page: OggPage, title: str | None) -> bytes:
        """Handle one page whose head is complete; return what goes out before it."""
        if page.flags & BOS:
            self._begin(page)
        elif page.serial != self._serial:
            self._codec = b""  # several logical streams at once: not chained
        if not self._in_data and page.granule not in (0, -1):
            self._in_data = True
            self._hear()
        before = b""
        at = page.offset - self._held_at
        if not self._in_data:
            self._header.append((page.head, page.body))
            self._header_size += len(page.head) + len(page.body)
            if self._header_size > HEADER_LIMIT:
                self._codec = b""
        elif (
            # After a data page (ffmpeg takes a BOS after headers alone for a second
            # stream), before a page that begins a packet, whose head is not out yet.
            title is not None
            and title != self._chained
            and self._codec
            and self._data_seen
            and not page.flags & CONTINUED
            and at >= 0
        ):
            chain = self._chain(title)
            if chain:
                before = bytes(self._held[:at]) + chain
                del self._held[:at]
                self._held_at, at = page.offset, 0
                self._relabel = (self._granule, page.sequence)
        if self._relabel is not None:
            self._write_relabelled(page, at)
        else:
            self._out_serial, self._out_sequence = page.serial, page.sequence + 1
            if page.granule >= 0:
                self._out_granule = page.granule
        if self._in_data:
            self._data_seen = True
            if page.granule >= 0:
                self._granule = page.granule
        return before

    def _begin(self, page: OggPage) -> None:
        if not self._in_data and self._serial is not None:
            self._codec = b""  # a second BOS before data: several streams multiplexed
            return
        # A new logical stream from the source: its own header, its own labels, and the
        # current title chained after its first data page.
        self._serial, self._in_data, self._data_seen = page.serial, False, False
        self._relabel, self._header, self._header_size, self._chained = None, [], 0, None
        body = page.body
        self._codec = _OPUS_HEAD if body.startswith(_OPUS_HEAD) else (
            _VORBIS_ID if body.startswith(_VORBIS_ID) else b"")  # fmt: skip
        self._preskip = int.from_bytes(body[10:12], "little") if self._codec == _OPUS_HEAD else 0

    def _hear(self) -> None:
        """At a logical stream's first data page: its comment header's title, if any, is
        the title this chain carries (only for a stream this chains: one Opus or Vorbis
        stream whose header is within :data:`HEADER_LIMIT`)."""
        found = packets(self._header) if self._codec else []
        heard = comment_title(found[1], self._title_limit) if len(found) > 1 else None
        if heard is not None:
            self._heard = self._chained = heard

    def _chain(self, title: str) -> bytes:
        """The end of the current logical stream and the headers of a new one, titled."""
        found = packets(self._header)
        wanted = 2 if self._codec == _OPUS_HEAD else 3
        if len(found) < wanted:
            return b""
        end = bytearray(b"OggS")
        end += struct.pack("<BBqIIIB", 0, EOS, self._out_granule, self._out_serial,
                           self._out_sequence, 0, 0)  # fmt: skip
        end[22:26] = crc(end).to_bytes(4, "little")
        serial = self._serials()
        while serial in (self._out_serial, self._serial):
            serial = self._serials()
        first, sequence = write_pages([found[0]], serial=serial, sequence=0, flags=BOS)
        comment = comment_packet(found[1], title)
        rest, sequence = write_pages([comment, *found[2:wanted]], serial=serial,
                                     sequence=sequence)  # fmt: skip
        self._out_serial, self._out_sequence, self._out_granule = serial, sequence, 0
        self._first_sequence, self._chained = sequence, title
        return bytes(end) + first + rest

    def _write_relabelled(self, page: OggPage, at: int) -> None:
        """Give the page at ``_held[at:]`` (its head held) the new chain's labels."""
        assert self._relabel is not None
        granule_base, sequence_base = self._relabel
        granule = page.granule
        if granule >= 0:
            granule = max(granule - granule_base, 0) + self._preskip
            self._out_granule = granule
        sequence = (page.sequence - sequence_base + self._first_sequence) & 0xFFFFFFFF
        head = bytearray(self._held[at : at + len(page.head)])
        length = len(page.head) + sum(page.head[HEAD_SIZE:])
        patch_head(head, length, granule=granule, serial=self._out_serial, sequence=sequence)
        self._held[at : at + len(head)] = head
        self._out_sequence = sequence + 1
