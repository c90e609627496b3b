"""serve() with the web routes and metrics wired in: a WAV uploaded with the real client
comes back over HTTP with its header repaired, and /metrics tells what happened."""

from __future__ import annotations

import io
import json
import sys
import wave
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import make_config

from mmstream.cli import main
from mmstream.client import connect
from mmstream.errors import StreamNotFoundError
from mmstream.server import RunningServer, serve

_WAVE_TO_PIPE = """
import sys, wave
w = wave.open(sys.stdout.buffer, "wb")
w.setnchannels(2); w.setsampwidth(2); w.setframerate(8000)
for i in range(10):
    w.writeframesraw(bytes([i, 1]) * 2 * 800)
try:
    w.close()
except OSError:
    pass
"""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _eventually(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


@pytest.fixture
async def running(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "cache"))
    return server


async def test_wav_upload_plays_back_whole(running: RunningServer) -> None:
    piped = (
        await trio.run_process([sys.executable, "-c", _WAVE_TO_PIPE], capture_stdout=True)
    ).stdout
    async with connect(running.url) as client:
        stat = await client.upload("take", piped, content_type="audio/wav", chunk_size=3000)
        assert stat.status == "ready" and stat.size == len(piped)
        with pytest.raises(StreamNotFoundError):
            await client.stat("missing")
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        whole = await http.get("/streams/take")
        assert whole.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(whole.content)) as reader:
            assert reader.getnframes() == 8000  # the piped header said 800
        assert whole.content[44:] == piped[44:]
        first = await http.get("/streams/take", headers={"Range": "bytes=0-99"})
        assert (first.status_code, len(first.content)) == (206, 100)
        page = await http.get("/")
        assert page.status_code == 200 and "mmstream" in page.text
        assert (await http.get("/healthz")).status_code == 200
        scraped = _samples((await http.get("/metrics")).text)
    assert scraped["mmstream_bytes_in_total", ()] == len(piped)
    assert scraped["mmstream_bytes_out_total", (("via", "http"),)] == len(piped) + 100
    assert scraped["mmstream_streams", (("status", "ready"),)] == 1
    assert scraped["mmstream_errors_total", (("code", "not-found"),)] == 1
    assert scraped["mmstream_active_connections", ()] >= 1
    assert scraped["mmstream_write_seconds_count", ()] >= 1


async def test_stat_command_shows_wav_duration(
    running: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    piped = (
        await trio.run_process([sys.executable, "-c", _WAVE_TO_PIPE], capture_stdout=True)
    ).stdout
    async with connect(running.url) as client:
        await client.upload("take", piped, content_type="audio/wav")
        await client.create("empty")
    assert await trio.to_thread.run_sync(main, ["stat", "take", "--url", running.url]) == 0
    text = capsys.readouterr().out
    assert "audio.format      wav" in text
    assert "audio.duration    1.000 s" in text
    assert "audio.sample_rate 8000" in text
    assert (
        await trio.to_thread.run_sync(main, ["stat", "take", "--json", "--url", running.url]) == 0
    )
    fields = json.loads(capsys.readouterr().out)
    assert fields["audio"] == {"format": "wav", "duration": 1.0, "sample_rate": 8000,
                               "channels": 2, "bits_per_sample": 16}  # fmt: skip
    assert (
        await trio.to_thread.run_sync(main, ["stat", "empty", "--json", "--url", running.url]) == 0
    )
    assert "audio" not in json.loads(capsys.readouterr().out)


async def test_followers_and_websocket_bytes_are_counted(running: RunningServer) -> None:
    assert running.metrics is not None
    value = running.metrics.registry.get_sample_value
    async with connect(running.url) as writer, connect(running.url) as reader:
        await writer.create("live", content_type="audio/webm")
        follower = await reader.tail("live", offset=0)
        await writer.append("live", b"x" * 5000)
        await _eventually(lambda: value("mmstream_followers") == 1)
        await writer.finalize("live")
        received = b"".join([chunk async for chunk in follower])
        assert received == b"x" * 5000
    await _eventually(lambda: value("mmstream_followers") == 0)
    assert value("mmstream_bytes_out_total", {"via": "websocket"}) == 5000
