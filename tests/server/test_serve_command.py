"""``mmstream serve`` as a user runs it: a subprocess, SIGTERM, a restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from server_helpers import http_get, v1_connect

from mmstream.protocol import Create, Stat

CHUNK = 64 * 1024


class ServeProcess:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = b""

    async def wait_for_log(self, pattern: bytes) -> re.Match[bytes]:
        assert self.process.stderr is not None
        with trio.fail_after(20):
            while (found := re.search(pattern, self.log)) is None:
                chunk = await self.process.stderr.receive_some(65536)
                assert chunk, f"server exited early:\n{self.log.decode()}"
                self.log += chunk
        return found

    async def read_rest_of_log(self) -> str:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some(65536):
            self.log += chunk
        return self.log.decode()


async def start(config: Path, cache: Path) -> tuple[ServeProcess, int]:
    command = [sys.executable, "-m", "mmstream", "serve", "--config", str(config),
               "--port", "0", "--cache-dir", str(cache), "--log-level", "info"]  # fmt: skip
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    serving = ServeProcess(process)
    found = await serving.wait_for_log(rb"listening on ws://127\.0\.0\.1:(\d+)")
    return serving, int(found.group(1))


def flushed_at_shutdown_only(tmp_path: Path, *, grace: float) -> tuple[Path, Path]:
    """A config file and a cache directory where only the shutdown flushes streams (the
    background sync would not run for an hour)."""
    config = tmp_path / "mmstream.toml"
    config.write_text(f'[cache]\nsync_policy = "finalize"\n[server]\nshutdown_grace = {grace}\n')
    return config, tmp_path / "cache"


async def test_sigterm_flushes_every_stream_exits_0_and_a_restart_finds_them(
    tmp_path: Path,
) -> None:
    config, cache = flushed_at_shutdown_only(tmp_path, grace=5.0)
    data = os.urandom(3 * CHUNK)
    serving, port = await start(config, cache)
    try:
        assert (await http_get(port, "/healthz")).status == 200
        async with v1_connect(f"ws://127.0.0.1:{port}/v1/streams/kept") as v1:
            await v1.call(Create())
            await v1.upload(data)
            stat = (await v1.call(Stat()))["stat"]
            assert stat["durable_offset"] < stat["size"] == len(data)
            serving.process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await v1.ws.close_code() == 1001
                assert await serving.process.wait() == 0
        log = await serving.read_rest_of_log()
        assert "SIGTERM: shutting down gracefully" in log
        assert re.search(r"connection close conn=c\d+ .*kind=websocket", log)
        assert re.search(r"upload bound conn=c\d+ stream=kept offset=0", log)
        assert re.search(r"upload ended conn=c\d+ stream=kept offset=196608", log)
        assert "Traceback" not in log
    finally:
        if serving.process.returncode is None:
            serving.process.kill()
            await serving.process.wait()

    await check_resumable_after_restart(config, cache, "kept", len(data), signal.SIGINT)


async def check_resumable_after_restart(
    config: Path, cache: Path, stream_id: str, size: int, stop: signal.Signals
) -> None:
    """A new server finds ``stream_id`` UPLOADING with ``size`` bytes, all durable; ``stop``
    then stops it cleanly."""
    serving, port = await start(config, cache)
    try:
        async with v1_connect(f"ws://127.0.0.1:{port}/v1/streams/{stream_id}") as v1:
            stat = (await v1.call(Stat()))["stat"]
            assert stat["status"] == "uploading"
            assert stat["size"] == stat["durable_offset"] == size
        serving.process.send_signal(stop)
        with trio.fail_after(10):
            assert await serving.process.wait() == 0
    finally:
        if serving.process.returncode is None:
            serving.process.kill()
            await serving.process.wait()


async def _receive_until(stream: trio.SocketStream, data: bytearray, size: int) -> None:
    while len(data) < size:
        piece = await stream.receive_some(65536)
        assert piece, f"closed after {len(data)} bytes"
        data += piece


async def test_sigterm_closes_icecast_sources_and_listeners_at_once(tmp_path: Path) -> None:
    """A connected Icecast source and live listeners never end by themselves: a SIGTERM
    closes them at once instead of waiting out the grace, and the source's bytes are kept
    (regression: the shutdown waited 80% of the grace for them, and its log line gave that
    share as "8.0s" for a 10 s grace)."""
    config, cache = flushed_at_shutdown_only(tmp_path, grace=10.0)
    data = os.urandom(3 * CHUNK)
    serving, port = await start(config, cache)
    try:
        source = await trio.open_tcp_stream("127.0.0.1", port)
        await source.send_all(
            b"PUT /streams/radio HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        head = bytearray()
        await _receive_until(source, head, len(b"HTTP/1.1 100 Continue\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 100 ")
        await source.send_all(data)
        # Two live listeners: the Icecast route, and playback's ranged GET.
        icecast = await trio.open_tcp_stream("127.0.0.1", port)
        await icecast.send_all(b"GET /streams/radio?offset=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        ranged = await trio.open_tcp_stream("127.0.0.1", port)
        await ranged.send_all(b"GET /streams/radio HTTP/1.1\r\nHost: x\r\nRange: bytes=0-\r\n\r\n")
        with trio.fail_after(10):  # each has every byte (the ranged one in chunks)
            for listener in [icecast, ranged]:
                received = bytearray()
                while data[-1000:] not in received:
                    await _receive_until(listener, received, len(received) + 1)
        serving.process.send_signal(signal.SIGTERM)
        started = trio.current_time()
        with trio.fail_after(20):
            assert await serving.process.wait() == 0
        took = trio.current_time() - started
        assert took < 10.0 / 2, f"shutdown took {took:.1f} s with a source connected"
        reply = await source.receive_some(65536)  # told why (a PUT has a final answer owed)
        assert reply.startswith(b"HTTP/1.1 503 ") and b'"closed"' in reply
        log = await serving.read_rest_of_log()
        assert re.search(r"shutting down: \d+ connections get 8 s of the 10 s grace", log), log
        assert re.search(
            r"source closed at shutdown stream=radio size=196608 \(stays uploading\)", log
        )
        assert "Traceback" not in log
        for stream in [source, icecast, ranged]:
            await stream.aclose()
    finally:
        if serving.process.returncode is None:
            serving.process.kill()
            await serving.process.wait()

    await check_resumable_after_restart(config, cache, "radio", len(data), signal.SIGTERM)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--config", "{missing}"], "config file not found"),
        (["--config", "{bad}"], "server.max_connections"),
        (
            ["--config", "{enum}"],
            "cache.sync_policy: must be one of always, interval, finalize; got 'sometimes'",
        ),
        (["--port", "70000"], "server.port"),
        (["--port", "0", "--cache-dir", "{bad}"], "bad.toml"),  # a file, not a directory
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nmax_connections = 0\n")
    enum = tmp_path / "enum.toml"
    enum.write_text("[cache]\nsync_policy = 'sometimes'\n")
    values = {"missing": str(tmp_path / "missing.toml"), "bad": str(bad), "enum": str(enum)}
    command = [sys.executable, "-m", "mmstream", "serve", *(a.format(**values) for a in arguments)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mmstream: error: ")
    assert message in result.stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "mmstream", "serve", "--port", str(port),
                   "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cannot serve on 127.0.0.1:" in result.stderr


async def test_a_second_server_on_the_same_cache_directory_exits_with_one_line(
    tmp_path: Path,
) -> None:
    """Two servers on one directory would recover and delete each other's files: the
    second one finds the directory locked and exits at once, the first is untouched."""
    config = tmp_path / "mmstream.toml"
    config.write_text("")
    cache = tmp_path / "cache"
    first, port = await start(config, cache)
    try:
        async with v1_connect(f"ws://127.0.0.1:{port}/v1/streams/kept") as v1:
            await v1.call(Create())
        command = [sys.executable, "-m", "mmstream", "serve", "--config", str(config),
                   "--port", "0", "--cache-dir", str(cache)]  # fmt: skip
        try:
            second = await trio.to_thread.run_sync(
                lambda: subprocess.run(command, capture_output=True, text=True, timeout=20)
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the second server kept running on a cache directory in use")
        assert second.returncode != 0
        assert second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith("mmstream: error: ")
        assert "in use by another mmstream server" in second.stderr
        assert "Traceback" not in second.stderr
        async with v1_connect(f"ws://127.0.0.1:{port}/v1/streams/kept") as v1:
            assert (await v1.call(Stat()))["stat"]["status"] == "uploading"
        assert (cache / "kept.json").exists()
    finally:
        first.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await first.process.wait()
