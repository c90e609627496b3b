"""HLS from one ``mmstream serve`` worker, beside the progressive ``GET`` fan-out.

    .venv/bin/python bench/hls.py [--seconds 10] [--clients 16] [--minutes 10]
                                  [--listeners 200] [--waiters 50] [--format mp3] [--json]

1. A ``--minutes`` long 128 kb/s MP3 (made by ffmpeg; ``--format opus`` or ``webm``:
   64 kb/s Opus in Ogg or WebM, whose segments are fMP4 made per request) is uploaded and
   finalized; then
   ``--clients`` keep-alive HTTP clients (httpx, in this process) fetch segments
   round-robin for ``--seconds``, then the playlist: requests per second and the server's
   CPU seconds per 1,000 requests (from /proc), whence what 1,000 plain HLS listeners (a
   segment and a playlist each every 4 s) cost the origin without a cache in front.
2. A live MP3 uploaded in real time (a tenth of a second per append). Each phase runs
   ``--seconds`` and the server's CPU is measured beside the upload alone:
   - ``--waiters`` LL-HLS listeners, as hls.js at the live edge: a blocking reload for the
     next part (``_HLS_msn``/``_HLS_part``), then that part, again and again. The reload's
     latency is the time from the append that brought the part's last bytes (sent) to
     the answer (received): p50 and p99.
   - ``--listeners`` progressive ``GET``s of the live stream (``?t=-1``), reading all.
   Each phase's CPU, less the upload's, scaled to 1,000 listeners.

Compare ratios, not absolute figures, on a shared machine (``uptime`` is printed).
``--json`` prints the figures as one JSON object (what ``python -m bench`` reads).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h11
import httpx
import trio
from server_ingest import start, stop

from mmstream.client import connect

#: A live upload's pace: one append per tick.
TICK = 0.1
#: Plain HLS: one segment and one playlist per listener every target duration.
TARGET = 4.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _say(quiet: bool, text: str) -> None:
    print(text, file=sys.stderr if quiet else sys.stdout, flush=True)


async def _hammer(urls: list[str], clients: int, seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(first: int) -> None:
        nonlocal done
        async with httpx.AsyncClient() as http:
            at = first
            while time.perf_counter() < deadline:
                answer = await http.get(urls[at % len(urls)])
                assert answer.status_code == 200, answer.text
                done += 1
                at += 1

    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, i)
    return done


#: What ``--format`` uploads as the finished stream: ffmpeg's options, the Content-Type.
FORMATS = {
    "mp3": (["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"], "audio/mpeg"),
    "opus": (["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"], "audio/ogg"),
    "webm": (["-c:a", "libopus", "-b:a", "64k", "-f", "webm"], "audio/webm"),
}


async def _encode(path: Path, seconds: float, fmt: str = "mp3") -> bytes:
    await trio.run_process(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                            f"sine=frequency=440:duration={seconds}", *FORMATS[fmt][0],
                            str(path)], check=True)  # fmt: skip
    return await trio.Path(path).read_bytes()


async def finished_stream(port: int, audio: bytes, clients: int, seconds: float, pid: int, content_type: str = "audio/mpeg") -> dict[str, float]:  # fmt: skip
    async with connect(f"ws://127.0.0.1:{port}") as uploader:
        await uploader.create("show", content_type=content_type)
        await uploader.append("show", audio)
        await uploader.finalize("show")
    base = f"http://127.0.0.1:{port}/streams/show"
    async with httpx.AsyncClient() as http:
        playlist = (await http.get(f"{base}/index.m3u8")).text
    segments = [f"{base}/{line}" for line in playlist.splitlines() if line[:1] not in "#"]
    out: dict[str, float] = {"segments": len(segments)}
    for name, urls in (("segment", segments), ("playlist", [f"{base}/index.m3u8"])):
        cpu = _cpu_seconds(pid)
        count = await _hammer(urls, clients, seconds)
        out[f"{name}_per_s"] = count / seconds
        out[f"{name}_cpu_per_1000"] = (_cpu_seconds(pid) - cpu) / count * 1000
    # A plain HLS listener: a segment and a playlist every target duration.
    per_listener = (out["segment_cpu_per_1000"] + out["playlist_cpu_per_1000"]) / 1000 / TARGET
    out["hls_cores_per_1000_listeners"] = per_listener * 1000
    return out


class LiveUpload:
    """A live stream uploaded in real time; remembers when each append was sent."""

    def __init__(self, port: int, audio: bytes, seconds: float) -> None:
        self.port = port
        self.audio = audio
        self.step = int(len(audio) * TICK / seconds)
        self.sent: list[float] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with connect(f"ws://127.0.0.1:{self.port}") as uploader:
            await uploader.create("live", content_type="audio/mpeg")
            # Two segments first, so that the playlist has parts and a past.
            head = self.step * int(2 * TARGET / TICK)
            await uploader.append("live", self.audio[:head])
            task_status.started()
            next_at = time.perf_counter()
            for at in range(head, len(self.audio), self.step):
                self.sent.append(time.perf_counter())
                await uploader.append("live", self.audio[at : at + self.step])
                next_at += TICK
                await trio.sleep(max(next_at - time.perf_counter(), 0.0))

    def sent_before(self, moment: float) -> float | None:
        at = bisect.bisect_right(self.sent, moment)
        return self.sent[at - 1] if at else None


def _uri(line: str) -> str:
    return line.split('URI="')[1].split('"')[0]


def _next_part(playlist: str) -> tuple[int, int, str]:
    """The preload hint's (sequence, index, URI): what hls.js waits for next."""
    hint = next(line for line in playlist.splitlines() if line.startswith("#EXT-X-PRELOAD-HINT"))
    uri = _uri(hint)
    sequence, index = uri.rsplit("/", 1)[1].split("-")[1].split(".")[:2]
    return int(sequence), int(index), uri


class _Http:
    """A light keep-alive HTTP/1.1 client (h11 over one Trio socket): httpx costs the
    listeners' process more than the server's answer, and its delay would be counted in
    the blocking-reload latency."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> _Http:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def get(self, path: str) -> tuple[int, bytes]:
        if self._conn.our_state is h11.DONE:
            self._conn.start_next_cycle()
        request = h11.Request(method="GET", target=path, headers=[("Host", "127.0.0.1")])
        await self._stream.send_all(self._conn.send(request) + self._conn.send(h11.EndOfMessage()))
        status, body = 0, bytearray()
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                self._conn.receive_data(await self._stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)

    async def aclose(self) -> None:
        await self._stream.aclose()


async def ll_listeners(port: int, upload: LiveUpload, waiters: int, seconds: float) -> dict[str, float]:  # fmt: skip
    base = "/streams/live"
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def listener() -> None:
        http = await _Http.open(port)
        try:
            sequence, index, _ = _next_part((await http.get(f"{base}/index.m3u8"))[1].decode())
            while time.perf_counter() < deadline:
                status, body = await http.get(
                    f"{base}/index.m3u8?_HLS_msn={sequence}&_HLS_part={index}"
                )
                received = time.perf_counter()
                assert status == 200, body
                sent = upload.sent_before(received)
                if sent is not None:
                    latencies.append(received - sent)
                text = body.decode()
                name = f'-{sequence}.{index}.mp3"'
                line = next(x for x in text.splitlines() if name in x and "PART:" in x)
                status, part = await http.get(f"{base}/{_uri(line)}")
                assert status == 200, part
                sequence, index, _ = _next_part(text)
        finally:
            await http.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(waiters):
            nursery.start_soon(listener)
    latencies.sort()
    return {
        "answers": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def get_listeners(port: int, listeners: int, seconds: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/streams/live?t=-1"
    received = 0

    async def listener(http: httpx.AsyncClient) -> None:
        nonlocal received
        with trio.move_on_after(seconds):
            async with http.stream("GET", url) as answer:
                assert answer.status_code == 200
                async for piece in answer.aiter_raw():
                    received += len(piece)

    limits = httpx.Limits(max_connections=listeners + 1)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http, trio.open_nursery() as nursery:
        for _ in range(listeners):
            nursery.start_soon(listener, http)
    return {"mb": received / 1e6}


async def _phase(pid: int, seconds: float, work: Any) -> tuple[dict[str, float], float]:
    """Run ``work()`` (or sleep ``seconds``): its result and the server's cores used."""
    cpu, wall = _cpu_seconds(pid), time.perf_counter()
    result = await work() if work is not None else {}
    if work is None:
        await trio.sleep(seconds)
    return result, (_cpu_seconds(pid) - cpu) / (time.perf_counter() - wall)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--waiters", type=int, default=50)
    parser.add_argument("--format", choices=sorted(FORMATS), default="mp3",
                        help="the finished stream's (the live one is MP3)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    quiet = args.json
    out: dict[str, Any] = {"loadavg_before": os.getloadavg(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        audio = await _encode(Path(tmp) / "a", args.minutes * 60, args.format)
        live_seconds = 3 * args.seconds + 4 * TARGET + 20
        live = await _encode(Path(tmp) / "live.mp3", live_seconds)
        command = [sys.executable, "-m", "mmstream", "serve", "--port", "0",
                   "--cache-dir", str(Path(tmp) / "cache"), "--log-level", "INFO"]  # fmt: skip
        process, port = await start(command)
        try:
            async with trio.open_nursery() as nursery:
                assert process.stderr is not None
                nursery.start_soon(_drain, process.stderr)
                out["finished"] = await finished_stream(port, audio, args.clients, args.seconds, process.pid, FORMATS[args.format][1])  # fmt: skip
                f = out["finished"]
                _say(quiet, f"segment requests: {f['segment_per_s']:,.0f}/s from one worker "
                     f"({f['segments']:.0f} segments, {args.clients} clients); server CPU "
                     f"{f['segment_cpu_per_1000']:.2f} s per 1,000")  # fmt: skip
                _say(quiet, f"playlist requests: {f['playlist_per_s']:,.0f}/s; server CPU "
                     f"{f['playlist_cpu_per_1000']:.2f} s per 1,000")  # fmt: skip
                _say(quiet, f"1,000 plain HLS listeners (a segment and a playlist each every "
                     f"4 s), no cache: {f['hls_cores_per_1000_listeners']:.2f} of a core")  # fmt: skip
                upload = LiveUpload(port, live, live_seconds)
                await nursery.start(upload.run)
                _, base = await _phase(process.pid, args.seconds, None)
                ll, ll_cores = await _phase(process.pid, args.seconds, lambda: ll_listeners(
                    port, upload, args.waiters, args.seconds))  # fmt: skip
                get, get_cores = await _phase(process.pid, args.seconds, lambda: get_listeners(
                    port, args.listeners, args.seconds))  # fmt: skip
                out["live"] = {
                    "upload_cores": base,
                    "waiters": args.waiters,
                    "reload_p50_ms": ll["p50_ms"],
                    "reload_p99_ms": ll["p99_ms"],
                    "reload_answers": ll["answers"],
                    "ll_cores_per_1000": max(ll_cores - base, 0.0) * 1000 / args.waiters,
                    "listeners": args.listeners,
                    "get_mb": get["mb"],
                    "get_cores_per_1000": max(get_cores - base, 0.0) * 1000 / args.listeners,
                }
                live_out = out["live"]
                _say(quiet, f"blocking reload, {args.waiters} LL-HLS listeners: answered "
                     f"{ll['answers']} times, {ll['p50_ms']:.1f} ms p50, {ll['p99_ms']:.1f} ms "
                     f"p99 after the part's last bytes were sent")  # fmt: skip
                _say(quiet, f"server cores per 1,000 live listeners (less the upload's "
                     f"{base:.3f}): LL-HLS {live_out['ll_cores_per_1000']:.2f} "
                     f"({args.waiters} measured), progressive GET "
                     f"{live_out['get_cores_per_1000']:.2f} ({args.listeners} measured, "
                     f"{get['mb']:.1f} MB read)")  # fmt: skip
                nursery.cancel_scope.cancel()
        finally:
            await stop(process)
    out["loadavg_after"] = os.getloadavg()
    _say(quiet, f"load average before/after: {out['loadavg_before'][0]:.1f} / "
         f"{out['loadavg_after'][0]:.1f}")  # fmt: skip
    if args.json:
        print(json.dumps(out))


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    """Read the server's log so that it never blocks on a full pipe."""
    while await stream.receive_some(65536):
        pass


if __name__ == "__main__":
    trio.run(main)
