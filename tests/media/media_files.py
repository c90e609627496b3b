"""Real audio files made by ffmpeg and sox, once per test session, and ffprobe's view of them."""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

FFMPEG, SOX, FFPROBE = shutil.which("ffmpeg"), shutil.which("sox"), shutil.which("ffprobe")
needs_tools = pytest.mark.skipif(
    None in (FFMPEG, SOX, FFPROBE),
    reason="ffmpeg and sox are not installed (apt-get install ffmpeg sox)",
)

#: kind → (ffmpeg output options, file suffix)
_FFMPEG_KINDS = {
    "opus": (["-c:a", "libopus", "-b:a", "64k"], "opus"),
    "vorbis": (["-c:a", "libvorbis"], "ogg"),
    "webm": (["-c:a", "libopus", "-cluster_time_limit", "1000"], "webm"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "128k"], "mp3"),
    "aac": (["-c:a", "aac", "-f", "adts"], "aac"),
}
KINDS = (*_FFMPEG_KINDS, "wav")
SECONDS = 12


@functools.cache
def media(kind: str) -> bytes:
    """A 12 s tone of ``kind`` (one of :data:`KINDS`)."""
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "wav":
            out = Path(tmp) / "a.wav"
            subprocess.run([str(SOX), "-n", "-r", "8000", "-c", "1", "-b", "16", str(out),
                            "synth", str(SECONDS), "sine", "440"], check=True)  # fmt: skip
        else:
            options, suffix = _FFMPEG_KINDS[kind]
            out = Path(tmp) / f"a.{suffix}"
            subprocess.run([str(FFMPEG), "-loglevel", "error", "-f", "lavfi", "-i",
                            f"sine=frequency=440:duration={SECONDS}", *options, str(out)],
                           check=True)  # fmt: skip
        return out.read_bytes()


def encoded(*options: str, seconds: int = 12) -> bytes:
    """What ffmpeg makes of a tone with output ``options`` (format last)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run([str(FFMPEG), "-v", "error", "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={seconds}", *options, str(out)],
                       check=True)  # fmt: skip
        return out.read_bytes()


def opus_file(*options: str, seconds: int = 12) -> bytes:
    """An Opus file ffmpeg makes from a tone (``options``: output options, format last)."""
    return encoded("-c:a", "libopus", *options, seconds=seconds)


def packets(data: bytes) -> list[tuple[float, int]]:
    """ffprobe's ``(pts_time, pos)`` of every audio packet in ``data``."""
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(data)
        tmp.flush()
        out = subprocess.run([str(FFPROBE), "-v", "error", "-select_streams", "a:0",
                              "-show_entries", "packet=pts_time,pos", "-of", "csv=p=0", tmp.name],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
    found = []
    for line in out.splitlines():
        fields = line.strip().strip(",").split(",")
        if len(fields) >= 2 and fields[0] not in ("", "N/A") and fields[1] not in ("", "N/A"):
            found.append((float(fields[0]), int(fields[1])))
    return found


def first_pts(data: bytes) -> float:
    """The presentation time ffprobe gives the first packet of ``data`` (a header plus the
    stream from a seek point)."""
    found = packets(data)
    assert found, "ffprobe found no packet"
    return found[0][0]


async def ffmpeg_reads(url: str, *, dts_warning: bool = True) -> tuple[int, str, float]:
    """ffmpeg's HLS demuxer decodes every segment: (return code, errors, seconds decoded).

    ffmpeg's MP3 demuxer times the packets inside a segment from the bitrate, so near a
    segment's end its estimate can run a frame or two past the next segment's PRIV time
    (which is exact: tests/media/test_timing.py), and the null muxer says so. That is a
    warning about its estimate, not a decoding error: unless ``dts_warning`` is False, it
    is the one line left out."""
    done = await trio.run_process(
        [str(FFMPEG), "-v", "error", "-stats", "-i", url, "-f", "null", "-"],
        capture_stderr=True, check=False,
    )  # fmt: skip
    err = done.stderr.decode(errors="replace")
    times = re.findall(r"time=(\d+):(\d+):([\d.]+)", err)
    h, m, sec = times[-1] if times else ("0", "0", "0")
    errors = "\n".join(
        line for line in err.splitlines()
        if line.strip() and "time=" not in line
        and not (dts_warning and "non monotonically increasing dts to muxer" in line)
    )  # fmt: skip
    return done.returncode, errors, int(h) * 3600 + int(m) * 60 + float(sec)


def real_time_source(
    base: str,
    data: bytes,
    seconds: int,
    stop: threading.Event,
    burst: int = 0,
    content_type: str = "audio/aac",
) -> None:
    """An Icecast source sending ``data`` at its own pace (a quarter second at a time),
    after its first ``burst`` seconds at once (what a source with a buffer sends first)."""
    step = len(data) // (seconds * 4)

    def body() -> Iterator[bytes]:
        if burst:
            yield data[: step * burst * 4]
        for at in range(step * burst * 4, len(data), step):
            if stop.is_set():
                return
            yield data[at : at + step]
            time.sleep(0.25)

    httpx.put(f"{base}/streams/radio", content=body(), timeout=seconds + 30,
              headers={"content-type": content_type})  # fmt: skip


#: What a live radio can send: ffmpeg's output options and the source's Content-Type.
_RADIO_KINDS = {
    "aac": (["-c:a", "aac", "-f", "adts"], "audio/aac"),
    "opus": (["-c:a", "libopus", "-f", "ogg"], "audio/ogg"),
    "webm": (["-c:a", "libopus", "-cluster_time_limit", "1000", "-f", "webm"], "audio/webm"),
}


@contextlib.contextmanager
def live_radio(
    base: str, seconds: int, *, listed: int, burst: int = 0, kind: str = "aac"
) -> Iterator[None]:
    """Stream ``radio`` on the server at ``base``: ``seconds`` of ``kind`` (AAC, Ogg Opus
    or WebM Opus) sent in real time by an Icecast source (the first ``burst`` seconds at
    once); entered once its live playlist lists ``listed`` segments."""
    options, content_type = _RADIO_KINDS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "tone"
        subprocess.run([str(FFMPEG), "-v", "error", "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={seconds}", *options, str(audio)],
                       check=True)  # fmt: skip
        data = audio.read_bytes()
    stop = threading.Event()
    source = threading.Thread(target=real_time_source,
                              args=(base, data, seconds, stop, burst, content_type), daemon=True)  # fmt: skip
    source.start()
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/streams/radio/index.m3u8").text.count("#EXTINF") < listed:
            assert time.monotonic() < deadline, f"the live playlist never listed {listed}"
            time.sleep(0.25)
        yield
    finally:
        stop.set()
        source.join(timeout=seconds + 30)
