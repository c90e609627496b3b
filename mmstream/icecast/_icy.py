"""In-band ICY metadata (SHOUTcast's, which Icecast speaks for MP3): pure, no sockets.

A listener that sends ``Icy-MetaData: 1`` is told ``icy-metaint: N`` and then gets, after
every N bytes of audio, one *metadata block*: a length byte L, then L * 16 bytes holding
``StreamTitle='...';`` padded with NULs. ``L = 0`` (a single zero byte) means "nothing new".
Players (ffmpeg, mpv, VLC, GStreamer's icydemux) strip the blocks and show the title; a
listener that did not ask gets the audio unchanged.

The interleaver counts every byte of the body as audio, the stream's header included, as
Icecast does: the count is the listener's, not the stream's.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
from attrs import validators as v

__all__ = [
    "DEFAULT_METAINT",
    "MAX_BLOCK",
    "IcyInterleaver",
    "metadata_block",
    "split_icy",
    "title_field",
]

#: Icecast's default ``icy-metaint``: about 1 s of 128 kbit/s audio between blocks.
DEFAULT_METAINT = 16000
#: The largest block a length byte can announce.
MAX_BLOCK = 255 * 16
_FRAME = b"StreamTitle='';"


def title_field(title: str) -> str:
    """``title`` as it can stand between ``StreamTitle='`` and ``';``.

    Control characters (a NUL would end the block early in C players) become spaces. A
    ``';`` inside the title would end it early in every player's parser (they split on
    ``';``), so it is written ``' ;``. Other quotes pass unchanged, as Icecast sends them.
    """
    clean = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in title)
    return clean.replace("';", "' ;")


def metadata_block(title: str | None) -> bytes:
    """The block that announces ``title``, or ``b"\\x00"`` (nothing new) for None.

    The title is UTF-8 (what ffmpeg, mpv and VLC decode) and cut at a character boundary
    when the block would pass the 4,080 bytes a length byte can announce."""
    if title is None:
        return b"\x00"
    room = MAX_BLOCK - len(_FRAME)
    encoded = title_field(title).encode("utf-8")
    if len(encoded) > room:
        encoded = encoded[:room].decode("utf-8", "ignore").encode("utf-8")
    text = b"StreamTitle='" + encoded + b"';"
    blocks = -(-len(text) // 16)
    return bytes([blocks]) + text.ljust(blocks * 16, b"\x00")


@attrs.define
class IcyInterleaver:
    """One listener's ICY body: audio in, audio with a block every ``metaint`` bytes out.

    The first block carries the current title, later ones only a change (else a zero byte),
    as Icecast does. A block is written just before the first byte that follows the N-byte
    boundary, so a title set while the listener waits there still makes that block."""

    metaint: int = attrs.field(default=DEFAULT_METAINT, validator=[v.ge(1), v.le(1 << 24)])
    #: Audio bytes until the next block.
    until_block: int = attrs.field(default=-1)
    #: The title the listener was last sent; None before its first block.
    sent: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.until_block < 0:
            self.until_block = self.metaint

    def feed(self, data: bytes | bytearray | memoryview, title: str | None) -> bytes:
        """The body bytes for the next ``data`` of audio, while the current title is
        ``title`` (None: none was ever set)."""
        out = bytearray()
        view = memoryview(data)
        while view:
            if self.until_block == 0:
                out += self._block(title)
                self.until_block = self.metaint
            take = min(self.until_block, len(view))
            out += view[:take]
            view = view[take:]
            self.until_block -= take
        return bytes(out)

    def _block(self, title: str | None) -> bytes:
        if title is None or title == self.sent:
            return b"\x00"
        self.sent = title
        return metadata_block(title)


def split_icy(body: bytes, metaint: int) -> tuple[bytes, list[bytes]]:
    """The audio and the non-empty metadata blocks (padding stripped) of an ICY body: what
    a player does, for tests and relays. A block cut short at the end is dropped."""
    audio = bytearray()
    blocks: list[bytes] = []
    for kind, piece in _pieces(body, metaint):
        if kind == "audio":
            audio += piece
        elif piece:
            blocks.append(piece.rstrip(b"\x00"))
    return bytes(audio), blocks


def _pieces(body: bytes, metaint: int) -> Iterator[tuple[str, bytes]]:
    at = 0
    while at < len(body):
        yield "audio", body[at : at + metaint]
        at += metaint
        if at >= len(body):
            return
        size = body[at] * 16
        if at + 1 + size > len(body):
            return
        yield "meta", body[at + 1 : at + 1 + size]
        at += 1 + size
