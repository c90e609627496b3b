"""How each kind of follower is sent a live stream's bytes: encoded once, shared by all.

A :class:`~._fanout.Broadcaster` hands each follower the stream's new bytes through the
follower's *encoder*. An encoder is a frozen value: its output depends only on itself, the
bytes and the current title, and it returns the encoder that follows. So every follower
with an equal encoder at the same stream position gets the very same output, and a round
encodes it once for all of them (:meth:`~._fanout.Broadcaster.encodes` counts): one slice
of the window for plain HTTP bodies, one WebSocket frame for every WebSocket follower, one
ICY body for every listener at the same point of the same ``metaint`` cycle.

Two forms, because a follower is written two ways: :meth:`Encoder.encode` gives the bytes
the broadcaster writes straight to the socket (for a WebSocket, whole frames), and
:meth:`Encoder.body` what a follower's own task sends through its connection's awaited
send (for a WebSocket, the payload: the library frames it).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Protocol

import attrs
from attrs import validators as v

from ..icecast import IcyInterleaver

__all__ = ["PLAIN", "Encoder", "Icy", "Parts", "Plain", "WebSocketFrames", "binary_frame_header"]

#: Buffers written together, in order, with one ``writev``.
Parts = Sequence[bytes | memoryview]


class Encoder(Protocol):
    """A follower kind's encoding, as a hashable value (equal encoders, equal output)."""

    #: The ``mmstream_bytes_out`` label its bytes count under.
    @property
    def label(self) -> str: ...

    #: Output bytes are the input bytes, one to one (a partial write just sends the rest of
    #: the stream later, from the window, instead of keeping the rest of the output).
    @property
    def transparent(self) -> bool: ...

    def encode(self, data: memoryview, title: str | None) -> tuple[Parts, Encoder]:
        """What the broadcaster writes to the socket for ``data``, and the next encoder."""
        ...

    def body(
        self, data: bytes | bytearray | memoryview, title: str | None
    ) -> tuple[bytes, Encoder]:
        """What the follower's own task sends for ``data``, and the next encoder."""
        ...


@attrs.frozen(cache_hash=True)
class Plain:
    """The stream's bytes unchanged: a plain or chunked HTTP body (or a WebSocket
    follower's payloads, framed by its library)."""

    label: str = "http"
    transparent = True

    def encode(self, data: memoryview, title: str | None) -> tuple[Parts, Encoder]:
        return (data,), self

    def body(
        self, data: bytes | bytearray | memoryview, title: str | None
    ) -> tuple[bytes, Encoder]:
        return bytes(data), self


#: The plain HTTP encoder every listener without in-band titles shares.
PLAIN = Plain()


@attrs.frozen(cache_hash=True)
class Icy:
    """An ICY body (``Icy-MetaData: 1``): where this listener is in its ``metaint`` cycle and
    the title it was last sent are its whole state (see :class:`~mmstream.icecast.IcyInterleaver`,
    which does the interleaving)."""

    metaint: int = attrs.field(validator=[v.ge(1), v.le(1 << 24)])
    #: Audio bytes until the next block (-1: a whole ``metaint``, a new listener).
    until_block: int = -1
    #: The title last sent; None before its first block.
    sent: str | None = None
    label = "http"
    transparent = False

    def encode(self, data: memoryview, title: str | None) -> tuple[Parts, Encoder]:
        out, after = self.body(data, title)
        return (out,), after

    def body(
        self, data: bytes | bytearray | memoryview, title: str | None
    ) -> tuple[bytes, Encoder]:
        interleaver = IcyInterleaver(self.metaint, self.until_block, self.sent)
        out = interleaver.feed(data, title)
        return out, Icy(self.metaint, interleaver.until_block, interleaver.sent)


@attrs.frozen(cache_hash=True)
class WebSocketFrames:
    """Binary WebSocket messages of at most ``piece`` bytes each (a ``tail``'s data). The
    frames are built here, not by the WebSocket library, so one frame serves every
    follower: a server's frames are unmasked and this server negotiates no extension, so
    a frame is a header and the payload (RFC 6455 §5.2), written with one ``writev``."""

    piece: int = attrs.field(validator=v.ge(1))
    label = "websocket"
    transparent = False

    def encode(self, data: memoryview, title: str | None) -> tuple[Parts, Encoder]:
        parts: list[bytes | memoryview] = []
        for at in range(0, len(data), self.piece):
            payload = data[at : at + self.piece]
            parts += (binary_frame_header(len(payload)), payload)
        return parts, self

    def body(
        self, data: bytes | bytearray | memoryview, title: str | None
    ) -> tuple[bytes, Encoder]:
        return bytes(data), self


def binary_frame_header(size: int) -> bytes:
    """The header of an unmasked, final binary frame of ``size`` payload bytes."""
    if size < 126:
        return struct.pack("!BB", 0x82, size)
    if size < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, size)
    return struct.pack("!BBQ", 0x82, 127, size)
