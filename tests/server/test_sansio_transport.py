"""The websockets transport over an in-memory stream, against websockets' own Sans-I/O client:
the handshake, messages in and out, keepalive pings and the closing handshake, no sockets."""

from __future__ import annotations

import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from mmstream.server import Connection, ConnectionClosed, TransportOptions, WebsocketsTransport
from mmstream.server._replay import ReplayStream


class Client:
    """websockets' client protocol over one end of a memory stream pair."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.protocol = ClientProtocol(parse_uri("ws://test/v1"))
        self.frames: list[Frame] = []

    async def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                await self.stream.send_all(data)

    async def receive(self, *, answer_pings: bool = True) -> list[Frame]:
        """The frames (or the response) that one read brings."""
        data = await self.stream.receive_some()
        if not data:
            self.protocol.receive_eof()
            return []
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        if answer_pings:
            await self.flush()  # the protocol answers pings itself
        else:
            self.protocol.data_to_send()  # dropped: as if the client were gone
        return [e for e in events if isinstance(e, Frame)]


def options(ping_interval: float | None = None) -> TransportOptions:
    return TransportOptions(
        max_message_size=1 << 20,
        receive_buffer_size=1 << 16,
        message_queue=16,
        ping_interval=ping_interval,
    )


async def _connect(
    nursery: trio.Nursery,
    handler: object,
    opts: TransportOptions,
    *,
    ends: tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream] | None = None,
) -> Client:
    server_end, client_end = ends or trio.testing.memory_stream_pair()
    transport = WebsocketsTransport(opts)
    nursery.start_soon(
        lambda: transport.serve_stream(
            server_end,
            handler,  # type: ignore[arg-type]
            connection_id="c1",
            remote="test",
            path="/v1",
            handshake_deadline=trio.current_time() + 10,
        )
    )
    client = Client(client_end)
    client.protocol.send_request(client.protocol.connect())
    await client.flush()
    while client.protocol.state is not OPEN:
        await client.receive()
    return client


async def test_messages_in_order_and_a_reply_then_a_clean_close() -> None:
    got: list[str | bytes | None] = []

    async def handler(connection: Connection) -> None:
        while len(got) < 3:
            message = await connection.receive()
            got.append(message)
        await connection.send_many(["done", b"\x01\x02"])

    async with trio.open_nursery() as nursery:
        client = await _connect(nursery, handler, options())
        client.protocol.send_text(b"first")
        client.protocol.send_binary(b"\x00" * 5000, fin=False)
        client.protocol.send_continuation(b"\x00" * 5000, fin=True)
        client.protocol.send_text("é".encode())
        await client.flush()
        frames: list[Frame] = []
        while len(frames) < 3:  # the reply, the data, the close frame
            frames += await client.receive()
        assert got == ["first", b"\x00" * 10000, "é"]
        assert [(f.opcode, bytes(f.data)) for f in frames[:2]] == [
            (Opcode.TEXT, b"done"),
            (Opcode.BINARY, b"\x01\x02"),
        ]
        assert frames[2].opcode is Opcode.CLOSE
        assert client.protocol.close_rcvd is not None and client.protocol.close_rcvd.code == 1000
        await client.stream.aclose()  # the TCP close the server waits for


async def test_text_that_is_not_utf8_closes_1007_after_the_messages_before_it() -> None:
    seen: list[object] = []

    async def handler(connection: Connection) -> None:
        try:
            while True:
                seen.append(await connection.receive())
        except ConnectionClosed as exc:
            seen.append(exc.code)

    async with trio.open_nursery() as nursery:
        client = await _connect(nursery, handler, options())
        client.protocol.send_binary(b"kept")
        client.protocol.send_text(b"\xff\xfe")
        client.protocol.send_binary(b"never")
        await client.flush()
        while client.protocol.close_rcvd is None:
            await client.receive()
        assert client.protocol.close_rcvd.code == 1007
        await client.stream.send_eof()
    assert seen == [b"kept", 1007]


async def test_a_client_that_never_answers_a_ping_is_closed_1011() -> None:
    async def handler(connection: Connection) -> None:
        try:
            await connection.receive()
        except ConnectionClosed as exc:
            assert exc.code == 1011

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _connect(nursery, handler, options(ping_interval=0.05))
            pings = 0
            while client.protocol.close_rcvd is None:
                frames = await client.receive(answer_pings=False)
                pings += sum(f.opcode is Opcode.PING for f in frames)
            assert pings == 1
            assert client.protocol.close_rcvd.code == 1011
            assert client.protocol.close_rcvd.reason == "keepalive ping timeout"


async def test_a_client_that_answers_pings_stays() -> None:
    done = trio.Event()

    async def handler(connection: Connection) -> None:
        assert await connection.receive() == "still here"
        done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _connect(nursery, handler, options(ping_interval=0.05))
            pings = 0
            while pings < 3:
                frames = await client.receive()  # answered
                pings += sum(f.opcode is Opcode.PING for f in frames)
            client.protocol.send_text(b"still here")
            await client.flush()
            await done.wait()
            while client.protocol.close_rcvd is None:
                await client.receive()
            assert client.protocol.close_rcvd.code == 1000
            await client.stream.aclose()


async def test_one_read_of_upload_frames_is_taken_as_one_batch() -> None:
    """``receive_frames_nowait`` hands over the binary messages at the head of the queue in
    one call, up to the limits, and leaves a text message behind them queued."""
    batches: list[list[bytes]] = []
    after: list[str | bytes | None] = []

    async def handler(connection: Connection) -> None:
        first = await connection.receive()
        assert first == b"\x00" * 100
        batches.append(connection.receive_frames_nowait(250, 1000))  # stops once 250 reached
        batches.append(connection.receive_frames_nowait(1 << 20, 10))  # stops at 10 frames
        batches.append(connection.receive_frames_nowait(1 << 20, 1000))  # stops at the text
        batches.append(connection.receive_frames_nowait(1 << 20, 1000))  # the text is next
        after.append(connection.receive_nowait())

    async with trio.open_nursery() as nursery:
        client = await _connect(nursery, handler, options())
        for _ in range(40):
            client.protocol.send_binary(b"\x00" * 100)
        client.protocol.send_text(b"behind")
        # One write: one read on the server's side.
        await client.stream.send_all(b"".join(client.protocol.data_to_send()))
        while client.protocol.close_rcvd is None:
            await client.receive()
        await client.stream.aclose()
    assert [len(batch) for batch in batches] == [3, 10, 26, 0]
    assert after == ["behind"]


class _CountingReplay(ReplayStream):
    """Counts the reads that came back as the shared read buffer."""

    shared_reads = 0

    async def receive_shared(self) -> bytes | bytearray:
        data = await super().receive_shared()
        if isinstance(data, bytearray):
            self.shared_reads += 1
        return data


async def test_full_reads_reach_the_protocol_as_the_shared_buffer_and_arrive_whole() -> None:
    """Over a plain socket the transport reads with ``receive_shared``: full reads are the
    thread's one read buffer, overwritten by the next read, and every message still
    arrives as it was sent (the protocol copies what it is given)."""
    sent = [bytes([i]) * (300 + 37 * i) for i in range(60)]
    received: list[bytes] = []

    async def handler(connection: Connection) -> None:
        while len(received) < len(sent):
            message = await connection.receive()
            assert isinstance(message, bytes)
            received.append(message)

    server_socket, client_socket = trio.socket.socketpair()
    server_end = _CountingReplay(trio.SocketStream(server_socket), b"", receive_size=1024)
    client_end = trio.SocketStream(client_socket)
    async with trio.open_nursery() as nursery:
        client = await _connect(nursery, handler, options(), ends=(server_end, client_end))
        for message in sent:
            client.protocol.send_binary(message)
        await client.stream.send_all(b"".join(client.protocol.data_to_send()))
        while client.protocol.close_rcvd is None:
            await client.receive()
        await client.stream.aclose()
    assert received == sent
    assert server_end.shared_reads > 10
