"""WebSocket frames outside the libraries: the server frames we build must parse as what
they say, and the fast path for upload frames must change nothing websockets' own parser
would do with the same bytes, however the socket cuts them."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from mmstream.server._wsframes import (
    FastBinaryProtocol,
    binary_frame,
    client_frame_size,
    payload_size,
    text_frame,
)

MAX_SIZE = 4096


def _parse_server_frame(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        assert not reader.buffer
        frame: Frame = done.value
        return frame
    raise AssertionError("the frame is incomplete")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_binary_frame_parses_as_one_unmasked_binary_frame(size: int) -> None:
    payload = os.urandom(size)
    frame = _parse_server_frame(binary_frame(payload))
    assert (frame.opcode, frame.fin, bytes(frame.data)) == (Opcode.BINARY, True, payload)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_client_frame_size_is_what_a_client_frame_takes(size: int) -> None:
    frame = Frame(Opcode.BINARY, bytes(size))
    assert client_frame_size(size) == len(frame.serialize(mask=True))


def test_payload_size_counts_utf8_bytes() -> None:
    assert payload_size(b"\xff\x00") == 2
    assert payload_size("abc") == 3
    assert payload_size("é✓") == len("é✓".encode())


def test_text_frame_parses_as_one_text_frame() -> None:
    frame = _parse_server_frame(text_frame('{"op":"ack","offset":4096,"é":1}'))
    assert (frame.opcode, frame.fin) == (Opcode.TEXT, True)
    assert bytes(frame.data).decode() == '{"op":"ack","offset":4096,"é":1}'


# -- the fast path against the library's parser ---------------------------------------------


def client_frame(
    head1: int, payload: bytes, *, masked: bool = True, announced: int | None = None
) -> bytes:
    """A client frame with first byte ``head1``; ``announced`` overrides the length field."""
    size = len(payload) if announced is None else announced
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([head1, mask_bit | size])
    elif size < 65536:
        head = bytes([head1, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([head1, mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


FIN = 0x80
payloads = st.binary(max_size=300) | st.sampled_from([os.urandom(126), os.urandom(MAX_SIZE)])
frames = st.one_of(
    # the fast path's frame, over and over
    payloads.map(lambda p: client_frame(FIN | Opcode.BINARY.value, p)),
    payloads.map(lambda p: client_frame(FIN | Opcode.BINARY.value, p)),
    # everything else goes to the library whole
    st.text(max_size=50).map(lambda t: client_frame(FIN | Opcode.TEXT.value, t.encode())),
    st.just(client_frame(FIN | Opcode.TEXT.value, b"\xff\xfe")),
    payloads.map(lambda p: client_frame(Opcode.BINARY.value, p)),  # a first fragment
    payloads.map(lambda p: client_frame(FIN | Opcode.CONT.value, p)),
    payloads.map(lambda p: client_frame(Opcode.CONT.value, p)),
    st.binary(max_size=20).map(lambda p: client_frame(FIN | Opcode.PING.value, p)),
    st.binary(max_size=20).map(lambda p: client_frame(FIN | Opcode.PONG.value, p)),
    st.just(client_frame(FIN | Opcode.BINARY.value, b"unmasked", masked=False)),
    st.just(client_frame(FIN | 0x40 | Opcode.BINARY.value, b"rsv1")),
    st.just(client_frame(FIN | 0x3, b"reserved opcode")),
    st.just(client_frame(FIN | Opcode.BINARY.value, b"", announced=MAX_SIZE + 1)),
    st.just(client_frame(FIN | Opcode.CLOSE.value, struct.pack("!H", 1000) + b"bye")),
)


def _frames(protocol: ServerProtocol) -> list[tuple[object, ...]]:
    """The events as (opcode, data, fin); the fast path's ``bytes`` are whole binary messages."""
    seen: list[tuple[object, ...]] = []
    for event in protocol.events_received():
        message: object = event
        if type(message) is bytes:
            seen.append((Opcode.BINARY, message, True))
        else:
            assert isinstance(event, Frame), event
            seen.append((event.opcode, bytes(event.data), event.fin))
    return seen


def _run(protocol: ServerProtocol, data: bytes, cuts: list[int], eof: bool) -> object:
    """Feed ``data`` cut at ``cuts``; what the protocol made of it, comparable."""
    events: list[tuple[object, ...]] = []
    sent: list[bytes] = []
    start = 0
    for end in [*sorted(set(cuts)), len(data)]:
        if end <= start:
            continue
        try:
            protocol.receive_data(data[start:end])
        except EOFError:
            events.append(("EOFError",))
        start = end
        events.extend(_frames(protocol))
        sent.extend(protocol.data_to_send())
    if eof:
        protocol.receive_eof()
        events.extend(_frames(protocol))
        sent.extend(protocol.data_to_send())
    close = protocol.close_sent
    return (
        events,
        b"".join(sent),
        protocol.state,
        None if close is None else (close.code, close.reason),
        type(protocol.parser_exc).__name__,
    )


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(frames, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=12 * (MAX_SIZE + 20)), max_size=8),
    eof=st.booleans(),
)
def test_the_fast_path_does_what_the_library_parser_does(
    stream: list[bytes], cuts: list[int], eof: bool
) -> None:
    data = b"".join(stream)
    cuts = [cut % (len(data) + 1) for cut in cuts]
    fast = FastBinaryProtocol(state=OPEN, max_size=MAX_SIZE)
    plain = ServerProtocol(state=OPEN, max_size=MAX_SIZE)
    assert _run(fast, data, cuts, eof) == _run(plain, data, cuts, eof)


def test_binary_frames_take_the_fast_path_once_the_handshake_is_done() -> None:
    protocol = FastBinaryProtocol(state=OPEN, max_size=MAX_SIZE)
    burst = b"".join(client_frame(FIN | Opcode.BINARY.value, bytes([n]) * 100) for n in range(5))
    protocol.receive_data(burst[:250])  # two whole frames and the start of a third
    assert protocol._framing and not protocol.reader.buffer
    protocol.receive_data(burst[250:])
    assert all(type(event) is bytes for event in protocol.events)
    assert [data for _, data, _ in _frames(protocol)] == [bytes([n]) * 100 for n in range(5)]


def test_a_frame_announcing_more_than_max_size_is_refused_from_its_header() -> None:
    protocol = FastBinaryProtocol(state=OPEN, max_size=MAX_SIZE)
    protocol.receive_data(client_frame(FIN | Opcode.BINARY.value, b"", announced=1 << 40)[:14])
    assert protocol.close_sent is not None and protocol.close_sent.code == 1009
    assert not protocol._framing
