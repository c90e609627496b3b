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


async def test_sigterm_flushes_every_stream_exits_0_and_a_restart_finds_them(
    tmp_path: Path,
) -> None:
    # Only the shutdown flushes: the background sync would not run for an hour.
    config = tmp_path / "mmstream.toml"
    config.write_text('[cache]\nsync_policy = "finalize"\n[server]\nshutdown_grace = 5.0\n')
    cache = tmp_path / "cache"
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

    serving, port = await start(config, cache)
    try:
        async with v1_connect(f"ws://127.0.0.1:{port}/v1/streams/kept") as v1:
            stat = (await v1.call(Stat()))["stat"]
            assert stat["status"] == "uploading"
            assert stat["size"] == stat["durable_offset"] == len(data)
        serving.process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await serving.process.wait() == 0
    finally:
        if serving.process.returncode is None:
            serving.process.kill()
            await serving.process.wait()


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
