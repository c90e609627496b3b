"""Icecast ingest: PUT/SOURCE in every framing, conflicts, drops and resumes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import trio
from icecast_helpers import (
    body_json,
    connect,
    has_size,
    live_source,
    open_source,
    read_head,
    read_to_end,
    running_server,
    wait_until,
)

from mmstream.server import RunningServer
from mmstream.streams import StreamStatus

AUDIO = bytes(range(256)) * 40


async def wait_status(server: RunningServer, stream_id: str, status: StreamStatus) -> None:
    await wait_until(lambda: server.manager.stat(stream_id).status is status)


async def test_unframed_body_after_100_continue_is_the_rest_of_the_connection(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        source = await open_source(server, "tone", extra="Icy-Genre: test\r\n")
        for at in range(0, len(AUDIO), 1000):
            await source.send_all(AUDIO[at : at + 1000])
        await source.send_eof()
        status, _, rest = await read_head(source)
        assert status == 200
        assert body_json(await read_to_end(source, rest)) == {
            "stream": "tone",
            "size": len(AUDIO),
            "status": "ready",
        }
        info = server.manager.stat("tone")
        assert info.status is StreamStatus.READY
        assert info.content_type == "audio/ogg"
        assert info.metadata == {"ice-name": "a test", "ice-public": "0", "icy-genre": "test"}
        assert await server.manager.read("tone", 0, len(AUDIO) + 1) == AUDIO


async def test_chunked_body(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        stream = await connect(server)
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(AUDIO[i : i + 777]), AUDIO[i : i + 777])
            for i in range(0, len(AUDIO), 777)
        )
        await stream.send_all(
            b"PUT /streams/c HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        status, _, _ = await read_head(stream)
        assert status == 200
        assert server.manager.stat("c").status is StreamStatus.READY
        assert await server.manager.read("c", 0, len(AUDIO) + 1) == AUDIO


async def test_content_length_body_with_expect(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        stream = await connect(server)
        await stream.send_all(
            b"PUT /streams/l HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(AUDIO)
        )
        status, _, rest = await read_head(stream)
        assert (status, rest) == (100, b"")
        await stream.send_all(AUDIO)
        status, _, _ = await read_head(stream)
        assert status == 200
        assert await server.manager.read("l", 0, len(AUDIO) + 1) == AUDIO
        # No Content-Type: the default, as for any other upload.
        assert server.manager.stat("l").content_type == "application/octet-stream"


async def test_legacy_source_method_over_http_1_0(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        stream = await connect(server)
        await stream.send_all(
            b"SOURCE /streams/old HTTP/1.0\r\nAuthorization: Basic c291cmNlOmhhY2ttZQ==\r\n"
            b"Content-Type: audio/mpeg\r\nice-name: legacy\r\n\r\n"
        )
        status, _, rest = await read_head(stream)
        assert (status, rest) == (200, b"")
        await stream.send_all(AUDIO)
        await stream.send_eof()
        assert await read_to_end(stream) == b""
        await wait_status(server, "old", StreamStatus.READY)
        assert server.manager.stat("old").metadata == {"ice-name": "legacy"}
        assert await server.manager.read("old", 0, len(AUDIO) + 1) == AUDIO


async def test_one_source_per_stream_and_none_for_a_finished_one(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        first = await open_source(server, "busy")
        await first.send_all(b"OggS")
        second = await connect(server)
        await second.send_all(b"PUT /streams/busy HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
        status, _, rest = await read_head(second)
        assert status == 409
        assert body_json(await read_to_end(second, rest))["error"]["code"] == "busy"
        await first.send_eof()
        await read_to_end(first)
        await wait_status(server, "busy", StreamStatus.READY)
        third = await connect(server)
        await third.send_all(b"PUT /streams/busy HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
        status, _, rest = await read_head(third)
        assert status == 409
        assert body_json(await read_to_end(third, rest))["error"]["code"] == "not-uploading"


async def test_hostile_ids_and_paths(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        for target in ["/streams/..%2Fx", "/streams/a.b", "/streams/" + "x" * 200]:
            stream = await connect(server)
            await stream.send_all(
                f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
            )
            status, _, _ = await read_head(stream)
            assert status in (400, 404), target
        assert server.manager.list() == []


async def test_a_dropped_source_leaves_the_stream_uploading_and_a_new_one_resumes(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, source_timeout=0.3) as server:
        # A chunked body cut short: dropped.
        stream = await connect(server)
        await stream.send_all(
            b"PUT /streams/r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nfirst\r\n"
        )
        await wait_until(has_size(server, "r", 5))
        await stream.aclose()
        # A source that goes silent: dropped after source_timeout.
        silent = await open_source(server, "r")
        await silent.send_all(b"second")
        assert await read_to_end(silent) == b""  # closed by the server at the timeout
        info = server.manager.stat("r")
        assert (info.status, info.size) == (StreamStatus.UPLOADING, 11)
        # A third source resumes and ends cleanly.
        third = await open_source(server, "r")
        await third.send_all(b"third")
        await third.send_eof()
        _, _, rest = await read_head(third)
        assert body_json(await read_to_end(third, rest))["size"] == 16
        assert await server.manager.read("r", 0, 100) == b"firstsecondthird"
        assert server.manager.stat("r").status is StreamStatus.READY


async def test_source_end_keep_leaves_the_stream_open(tmp_path: Path) -> None:
    async with running_server(tmp_path, source_end="keep") as server:
        source = await open_source(server, "k")
        await source.send_all(b"abc")
        await source.send_eof()
        _, _, rest = await read_head(source)
        assert body_json(await read_to_end(source, rest))["status"] == "uploading"
        assert server.manager.stat("k").status is StreamStatus.UPLOADING


async def test_hostile_sources_get_clear_errors(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        cases = {
            # A content type the manager refuses: 400 with the protocol's error shape.
            b"PUT /streams/a HTTP/1.1\r\nHost: x\r\nContent-Type: audio/\x7fbad\r\n"
            b"Content-Length: 1\r\n\r\nx": 400,
            # A transfer coding other than chunked.
            b"PUT /streams/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n": 501,
        }
        for request, expected in cases.items():
            stream = await connect(server)
            await stream.send_all(request)
            status, _, rest = await read_head(stream)
            assert status == expected, request
            if expected == 400 and b"audio/" in request:
                error = body_json(await read_to_end(stream, rest))["error"]
                assert error["code"] == "bad-request"
        assert server.manager.list() == []


async def test_a_broken_chunked_body_is_a_drop(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        stream = await connect(server)
        await stream.send_all(
            b"PUT /streams/z HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\nzz-not-hex\r\n"
        )
        assert await read_to_end(stream) == b""  # dropped, no reply
        info = server.manager.stat("z")
        assert (info.status, info.size) == (StreamStatus.UPLOADING, 3)


async def test_a_source_never_writes_into_a_stream_created_again_under_its_id(
    tmp_path: Path,
) -> None:
    """Issue 14, item 1: the stream a source writes to is deleted and its id created again
    (by a WebSocket client, say): the source's next bytes are refused, never appended to
    the new stream."""
    async with running_server(tmp_path) as server:
        source = await live_source(server, "s", b"\x01" * 1000)
        await server.manager.delete("s")
        await server.manager.create("s")
        await server.manager.append("s", b"\x02" * 10)
        with contextlib.suppress(trio.BrokenResourceError):  # refused and closed already
            await source.send_all(b"\x01" * 1000)
        status, _, rest = await read_head(source)
        assert status == 404
        assert body_json(await read_to_end(source, rest))["error"]["code"] == "stream-changed"
        assert await server.manager.read("s", 0, 100) == b"\x02" * 10
        await source.aclose()


async def test_a_put_with_a_length_reserves_that_length(tmp_path: Path) -> None:
    """``Content-Length`` says how big the stream will be: the new stream reserves that
    (in whole blocks), not ``initial_size`` (1 MiB here)."""
    async with running_server(tmp_path) as server:
        stream = await connect(server)
        await stream.send_all(
            b"PUT /streams/clip HTTP/1.1\r\nHost: x\r\nContent-Type: audio/ogg\r\n"
            b"Content-Length: %d\r\n\r\n" % len(AUDIO) + AUDIO[:1000]
        )
        await wait_until(has_size(server, "clip", 1000))
        assert server.manager.stat("clip").reserved == 12 * 1024  # 10,240 bytes: 3 blocks
        await stream.send_all(AUDIO[1000:])
        status, _, rest = await read_head(stream)
        assert status == 200
        assert body_json(await read_to_end(stream, rest))["status"] == "ready"


async def test_libshouts_empty_probe_gets_401_and_creates_nothing(tmp_path: Path) -> None:
    """MPD, ices and ezstream (libshout) first send an empty SOURCE without credentials and
    retry with their password after Icecast's 401; even with auth off that probe must not
    create (and finalize) an empty stream."""
    async with running_server(tmp_path) as server:
        stream = await connect(server)
        await stream.send_all(
            b"SOURCE /streams/mpd HTTP/1.0\r\nHost: x\r\nUser-Agent: MPD\r\n"
            b"Content-Type: audio/mpeg\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n"
            b"Prefer: return=minimal\r\n\r\n"
        )
        status, headers, _ = await read_head(stream)
        assert status == 401 and "www-authenticate" in headers
        assert server.manager.list() == []


async def test_libshouts_tls_upgrade_offer_is_answered_without_the_upgrade(
    tmp_path: Path,
) -> None:
    """libshout in its default TLS mode (ices2) asks ``OPTIONS *`` offering TLS first and
    gives up at a 404 ("Login failed"); a 200 with ``Allow`` and no 101 makes it go on in
    plain HTTP, as with Icecast."""
    async with running_server(tmp_path) as server:
        stream = await connect(server)
        await stream.send_all(
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\nUser-Agent: IceS 2.0.3\r\n"
            b"Connection: Upgrade\r\nUpgrade: TLS/1.0, HTTP/1.1\r\n\r\n"
        )
        status, headers, _ = await read_head(stream)
        assert status == 200
        assert "SOURCE" in headers["allow"] and "PUT" in headers["allow"]
        assert "upgrade" not in headers
        assert server.manager.list() == []
