"""WebSocket frames handled outside the libraries: server frames built once and written
without them (acks, a live stream's pieces for every follower), and a fast path through
``websockets``' parser for the frame an upload is made of.

``websockets`` parses every frame with a generator-based coroutine (``Frame.parse`` over a
``StreamReader``): for a 4 KiB upload frame that is most of the cost of receiving it, and with
a thousand real-time streams each frame comes alone, so nothing amortises it (see
docs/performance.md). :class:`FastBinaryProtocol` finds the frame boundaries in what the
socket returned itself, and a whole, masked, final binary frame of allowed size goes straight
to the events, unmasked with the library's own C ``apply_mask``, as the payload's ``bytes``
(the library's events are requests, responses and frames, never bytes: the connection hands
these to its queue as they are). Every other frame (text,
control, fragments, anything malformed) is handed to the library's parser whole, so it keeps
every check and every close code, and since it only ever sees whole frames it stays at a
frame boundary, where the fast path can take over again.

The fast path starts only once the handshake is done and the library's parser waits at a
frame boundary, and stops for good when a frame announces more than ``max_size`` (the
parser then refuses it with 1009 and the connection closes).
"""

from __future__ import annotations

import struct
from typing import Any

from websockets.frames import Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build of websockets without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "FastBinaryProtocol",
    "binary_frame",
    "binary_head",
    "client_frame_size",
    "frame_head",
    "payload_size",
    "text_frame",
]

#: First header byte of a final, unfragmented binary frame with no reserved bits set.
_FINAL_BINARY = 0x80 | Opcode.BINARY.value
_MASKED = 0x80
#: The code of the generator the parser waits in between two frames.
_AT_EOF = StreamReader.at_eof.__code__


def frame_head(opcode: Opcode, size: int) -> bytes:
    """The header of a whole, final server-to-client frame of ``size`` payload bytes
    (RFC 6455 5.2: no mask; no extension is ever negotiated, so it is valid on every
    connection). Written together with its payload (``os.writev``), nothing is copied."""
    head1 = 0x80 | opcode.value
    if size < 126:
        return struct.pack("!BB", head1, size)
    if size < 1 << 16:
        return struct.pack("!BBH", head1, 126, size)
    return struct.pack("!BBQ", head1, 127, size)


def client_frame_size(size: int) -> int:
    """The bytes a client's whole frame of ``size`` payload bytes takes on the wire: its
    header (2, 4 or 10 bytes) and the 4-byte mask a client must send."""
    if size < 126:
        return size + 6
    if size < 1 << 16:
        return size + 8
    return size + 14


def payload_size(message: str | bytes) -> int:
    """The bytes ``message`` took as a frame's payload (text is UTF-8)."""
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode())


def binary_head(size: int) -> bytes:
    return frame_head(Opcode.BINARY, size)


def binary_frame(payload: bytes) -> bytes:
    return binary_head(len(payload)) + payload


def text_frame(text: str) -> bytes:
    payload = text.encode()
    return frame_head(Opcode.TEXT, len(payload)) + payload


class FastBinaryProtocol(ServerProtocol):
    """A :class:`ServerProtocol` that parses whole binary frames without its generator."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        #: True once the frames are split here (the library's parser sees whole ones only).
        self._framing = False
        #: The start of a frame that has not arrived whole yet.
        self._partial = b""

    def receive_data(self, data: bytes | bytearray) -> None:
        if not self._framing:
            if not self._at_frame_boundary():
                super().receive_data(data)
                return
            self._framing = True
        if self.reader.eof:
            raise EOFError("stream ended")
        if self._partial:
            data, self._partial = self._partial + data, b""
        self._split(data)

    def receive_eof(self) -> None:
        if self._partial:
            # A frame cut short: the parser reports the unexpected end of the stream.
            partial, self._partial = self._partial, b""
            super().receive_data(partial)
        super().receive_eof()

    def _at_frame_boundary(self) -> bool:
        if self.state is not OPEN or self.reader.buffer or self.debug or self.extensions:
            return False
        waiting: Any = self.parser  # a generator suspended in a chain of ``yield from``
        while (inner := waiting.gi_yieldfrom) is not None:
            waiting = inner
        return waiting.gi_code is _AT_EOF

    def _split(self, data: bytes | bytearray) -> None:
        """Deliver every whole frame in ``data``; keep the last one if it is cut short."""
        view = memoryview(data)
        end = len(data)
        max_size = self.max_message_size
        pos = 0
        #: Where the current run of frames for the library's parser began.
        parse_from: int | None = None
        while end - pos >= 2:
            head1, head2 = data[pos], data[pos + 1]
            length = head2 & 0x7F
            start = pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length = int.from_bytes(view[start : start + 2])
                start += 2
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(view[start : start + 8])
                start += 8
            if max_size is not None and length > max_size:
                # Too big to wait for: the parser refuses it (1009) from its header.
                self._framing = False
                super().receive_data(bytes(view[pos if parse_from is None else parse_from :]))
                return
            masked = head2 & _MASKED
            payload = start + 4 if masked else start
            frame_end = payload + length
            if frame_end > end:
                break
            if head1 == _FINAL_BINARY and masked:
                if parse_from is not None:
                    super().receive_data(bytes(view[parse_from:pos]))
                    parse_from = None
                if self.state is OPEN and self.current_size is None:
                    unmasked = apply_mask(view[payload:frame_end], data[start:payload])
                    self.events.append(unmasked)  # type: ignore[arg-type]  # see above
                    pos = frame_end
                    continue
            if parse_from is None:
                parse_from = pos
            pos = frame_end
        if parse_from is not None:
            super().receive_data(bytes(view[parse_from:pos]))
        if pos < end:
            self._partial = bytes(view[pos:])
