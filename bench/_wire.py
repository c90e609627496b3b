"""A minimal, fast WebSocket client side for the load generator (RFC 6455, no extensions).

The generator must cost less than the servers it measures, so frames are built and masked
once, up front (:func:`prebuilt_frames`), and sent as one blob per ``sendall``. Incoming
frames are parsed by :class:`FrameReader`, which skips binary payloads without copying them
(it keeps only their first bytes, where the live-tail timestamps live).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import attrs

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: Bytes of a binary payload :class:`FrameReader` keeps (timestamps live there).
HEAD_BYTES = 16


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (one big-int XOR, fast enough up front)."""
    if not payload:
        return b""
    reps = -(-len(payload) // 4)
    stream = (key * reps)[: len(payload)]
    n = int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
    return n.to_bytes(len(payload), "little")


def frame_header(opcode: int, length: int, *, masked: bool = True, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


def client_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One masked client frame; a fresh random key unless ``key`` is given."""
    key = key if key is not None else os.urandom(4)
    return frame_header(opcode, len(payload)) + key + mask_bytes(payload, key)


def text_frame(obj: Any) -> bytes:
    return client_frame(OP_TEXT, json.dumps(obj, separators=(",", ":")).encode())


def prebuilt_frames(chunk: int, *, min_blob: int = 256 * 1024) -> tuple[bytes, int]:
    """A blob of identical masked binary frames of ``chunk`` payload bytes, ≥ ``min_blob`` long.

    Returns ``(blob, frames_in_blob)``. The payload is random (incompressible) and masked with
    a random non-zero key, so servers do the full unmasking work.
    """
    key = os.urandom(4)
    while key == b"\0\0\0\0":
        key = os.urandom(4)
    frame = client_frame(OP_BINARY, os.urandom(chunk), key)
    count = max(1, -(-min_blob // len(frame)))
    return frame * count, count


@attrs.frozen
class Frame:
    """One server frame: text payloads whole, binary ones as a length and their first bytes."""

    opcode: int
    fin: bool
    length: int
    data: bytes


@attrs.define
class FrameReader:
    """Incremental parser of server (unmasked) frames; binary payloads are counted, not kept."""

    _buf: bytearray = attrs.field(factory=bytearray)
    # The frame whose payload is being skipped: (opcode, fin, length, remaining, head).
    _skipping: tuple[int, bool, int, int, bytearray] | None = None
    binary_bytes: int = 0

    def feed(self, data: bytes | memoryview) -> Iterator[Frame]:
        view = memoryview(data)
        while view:
            if self._skipping is not None:
                opcode, fin, length, remaining, head = self._skipping
                take = min(remaining, len(view))
                if len(head) < HEAD_BYTES:
                    head += view[: HEAD_BYTES - len(head)]
                view = view[take:]
                remaining -= take
                self.binary_bytes += take
                if remaining:
                    self._skipping = (opcode, fin, length, remaining, head)
                    return
                self._skipping = None
                yield Frame(opcode, fin, length, bytes(head))
                continue
            self._buf += view
            view = memoryview(b"")
            yield from self._parse_buffered()
            if self._skipping is not None and self._buf:
                view = memoryview(bytes(self._buf))
                self._buf.clear()

    def _parse_buffered(self) -> Iterator[Frame]:
        buf = self._buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                (length,) = struct.unpack_from("!H", buf, 2)
                pos = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buf, 2)
                pos = 10
            if b1 & 0x80:
                pos += 4  # a masked server frame is a protocol error; skip the key anyway
            opcode, fin = b0 & 0x0F, bool(b0 & 0x80)
            if opcode in (OP_BINARY, OP_CONT) and len(buf) - pos < length:
                del buf[:pos]
                self._skipping = (opcode, fin, length, length, bytearray())
                return
            if len(buf) - pos < length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            if opcode in (OP_BINARY, OP_CONT):
                self.binary_bytes += length
                yield Frame(opcode, fin, length, payload[:HEAD_BYTES])
            else:
                yield Frame(opcode, fin, length, payload)


class HandshakeError(ConnectionError):
    """The server did not answer the opening handshake with ``101 Switching Protocols``."""


def handshake_request(host: str, port: int, path: str, subprotocol: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def split_handshake_response(data: bytes) -> tuple[bytes, bytes] | None:
    """``(head, rest)`` once the response head is complete; raises unless it is a 101."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head, rest = data[:end], data[end + 4 :]
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise HandshakeError(status.decode(errors="replace"))
    return head, rest


class WsClient:
    """A blocking WebSocket client on a raw socket, for one connection of the generator."""

    def __init__(self, sock: socket.socket, reader: FrameReader, pending: list[Frame]) -> None:
        self.sock = sock
        self.reader = reader
        self._pending = pending

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        path: str = "/",
        *,
        subprotocol: str | None = None,
        timeout: float = 30.0,
    ) -> WsClient:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(handshake_request(host, port, path, subprotocol))
        data = b""
        for _ in range(1000):
            chunk = sock.recv(65536)
            if not chunk:
                raise HandshakeError("connection closed during the handshake")
            data += chunk
            done = split_handshake_response(data)
            if done is not None:
                reader = FrameReader()
                return cls(sock, reader, list(reader.feed(done[1])))
        raise HandshakeError("handshake response too long")

    def send_json(self, obj: Any) -> None:
        self.sock.sendall(text_frame(obj))

    def frames(self) -> Iterator[Frame]:
        """Frames as they arrive; answers pings so long runs are not dropped by keepalive."""
        while True:
            while self._pending:
                frame = self._pending.pop(0)
                if frame.opcode == OP_PING:
                    self.sock.sendall(client_frame(OP_PONG, frame.data))
                    continue
                yield frame
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self._pending.extend(self.reader.feed(data))

    def recv_json(self) -> dict[str, Any]:
        """The next text message as JSON (binary frames before it are skipped)."""
        for frame in self.frames():
            if frame.opcode == OP_TEXT:
                obj: dict[str, Any] = json.loads(frame.data)
                return obj
            if frame.opcode == OP_CLOSE:
                raise ConnectionError(f"server closed the connection: {frame.data[2:]!r}")
        raise AssertionError("unreachable")

    def reply_to(self, request_id: int) -> dict[str, Any]:
        """Wait for the reply ``{"re": request_id, ...}``, skipping acks and other pushes."""
        for _ in range(10_000_000):
            msg = self.recv_json()
            if msg.get("re") == request_id:
                return msg
        raise TimeoutError(f"no reply to request {request_id}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
        self.sock.close()
