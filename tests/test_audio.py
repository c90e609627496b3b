"""Format sniffing and WAV header repair, with WAVs written by real tools to real pipes."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmstream.audio import (
    HEAD_SIZE,
    AudioFormat,
    WavInfo,
    describe_audio,
    detect_format,
    is_wav_content_type,
    parse_wav,
)

# Python's wave module on an unseekable stdout: the header states the size of the first
# block written, and the later attempt to seek back and fix it fails (the script ignores that).
_WAVE_TO_PIPE = """
import sys, wave
w = wave.open(sys.stdout.buffer, "wb")
w.setnchannels(2); w.setsampwidth(2); w.setframerate(8000)
for i in range(5):
    w.writeframesraw(bytes([i + 1, 0]) * 2 * 1600)
try:
    w.close()
except OSError:
    pass
"""


def _patched(data: bytes, info: WavInfo) -> bytes:
    out = bytearray(data)
    for offset, value in info.patches():
        out[offset : offset + len(value)] = value
    return bytes(out)


def _parse(data: bytes) -> WavInfo:
    info = parse_wav(data[:HEAD_SIZE], len(data))
    assert info is not None
    return info


def test_wave_module_on_a_pipe() -> None:
    data = subprocess.run(
        [sys.executable, "-c", _WAVE_TO_PIPE], capture_output=True, check=True
    ).stdout
    assert len(data) == 44 + 5 * 6400
    info = _parse(data)
    assert info.declared_data_size == 6400  # the first block only
    assert (info.channels, info.sample_rate, info.bits_per_sample) == (2, 8000, 16)
    assert info.data_size == 5 * 6400
    assert info.duration == pytest.approx(1.0)
    fixed = _patched(data, info)
    with wave.open(io.BytesIO(fixed)) as reader:
        assert reader.getnframes() == 8000
        assert reader.readframes(8000) == data[44:]
    assert _parse(fixed).patches() == []


def test_a_wav_written_to_a_file_needs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ok.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 16000)
        w.writeframes(b"\x02\x03" * 8000)
    data = path.read_bytes()
    info = _parse(data)
    assert info.patches() == []
    assert info.duration == pytest.approx(1.5)


sox = pytest.mark.skipif(
    shutil.which("sox") is None, reason="sox is not installed (apt-get install sox)"
)


def _sox(*args: str, stdin: bytes | None = None) -> bytes:
    # `| cat` matters: sox fixes the header itself when stdout is a seekable file.
    sox_run = subprocess.Popen(
        ["sox", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    out, _ = sox_run.communicate(stdin)
    assert sox_run.returncode == 0
    return out


@sox
@pytest.mark.parametrize(
    "fmt",
    [
        ["-r", "8000", "-e", "signed", "-b", "16", "-c", "1"],  # PCM
        ["-r", "48000", "-e", "signed", "-b", "32", "-c", "1"],  # EXTENSIBLE + fact
        ["-r", "44100", "-e", "floating-point", "-b", "32", "-c", "2"],  # float + fact
    ],
)
def test_sox_streaming_to_a_pipe_matches_sox_writing_a_file(tmp_path: Path, fmt: list[str]) -> None:
    raw = bytes(range(256)) * 1200  # unknown length to sox: it reads a pipe
    streamed = _sox("-t", "raw", *fmt, "-", "-t", "wav", "-", stdin=raw)
    reference = tmp_path / "ref.wav"
    _sox("-t", "raw", *fmt, "-", str(reference), stdin=raw)
    expected = reference.read_bytes()
    assert streamed != expected  # placeholders
    info = _parse(streamed)
    assert info.declared_data_size > len(streamed)
    assert _patched(streamed, info) == expected
    seconds = len(raw) / info.byte_rate
    assert info.duration == pytest.approx(seconds)
    out = subprocess.run(
        ["sox", "--i", "-D", "-"], input=_patched(streamed, info), capture_output=True
    )
    assert float(out.stdout) == pytest.approx(seconds, rel=1e-3)


def _wav(data_declared: int, payload: bytes, *, trailer: bytes = b"", riff: int = 0) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", data_declared) + payload + trailer
    return b"RIFF" + struct.pack("<I", riff) + body


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF, 0x7FFFF000])
def test_placeholders(placeholder: int) -> None:
    data = _wav(placeholder, b"\x10\x00" * 4000, riff=placeholder)
    info = _parse(data)
    assert info.data_size == 8000
    assert info.duration == pytest.approx(0.5)
    fixed = _patched(data, info)
    assert struct.unpack_from("<I", fixed, 4)[0] == len(data) - 8
    assert struct.unpack_from("<I", fixed, 40)[0] == 8000
    with wave.open(io.BytesIO(fixed)) as reader:
        assert reader.getnframes() == 4000


def test_a_trailing_list_chunk_is_respected() -> None:
    info_chunk = b"INFOISFT" + struct.pack("<I", 4) + b"sox\x00"
    trailer = b"LIST" + struct.pack("<I", len(info_chunk)) + info_chunk
    data = _wav(8000, b"\x10\x00" * 4000, trailer=trailer, riff=36 + 8000 + len(trailer))
    info = _parse(data)
    assert info.data_size == 8000
    assert info.patches() == []


def test_samples_that_look_like_a_chunk_are_still_samples() -> None:
    # Declared 100 bytes, then sample bytes that spell "abcd" with a size running past the end.
    payload = b"\x01\x00" * 50 + b"abcd" + struct.pack("<I", 4) + b"\x01\x00" * 100
    data = _wav(100, payload)
    assert _parse(data).data_size == len(payload)


def test_stray_bytes_after_the_data() -> None:
    data = _wav(100, b"\x01\x00" * 50 + b"xyz")
    assert _parse(data).data_size == 103


def test_growing_stream_gives_duration_so_far() -> None:
    data = _wav(0, b"\x00\x00" * 800)
    assert _parse(data).duration == pytest.approx(0.1)


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"RIFF",
        b"RIFF\x00\x00\x00\x00WAVE",
        b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00",  # data before fmt
        b"RIFF\x00\x00\x00\x00WAVEfmt \x02\x00\x00\x00\x01\x00",  # fmt too short
        b"RIFF\x00\x00\x00\x00AVI LIST",
        b"\x1a\x45\xdf\xa3",
    ],
)
def test_not_a_usable_wav(head: bytes) -> None:
    assert parse_wav(head, max(len(head), 12)) is None


def test_zero_channels_or_rate_is_not_usable() -> None:
    data = bytearray(_wav(0, b"\x00" * 10))
    data[22:24] = b"\x00\x00"
    assert parse_wav(bytes(data), len(data)) is None


def test_data_chunk_beyond_the_head_is_left_alone() -> None:
    junk = b"JUNK" + struct.pack("<I", HEAD_SIZE) + b"\x00" * HEAD_SIZE
    data = _wav(0, b"\x00" * 10)
    data = data[:12] + junk + data[12:]
    assert parse_wav(data[:HEAD_SIZE], len(data)) is None


@given(st.binary(max_size=200), st.integers(0, 10_000))
def test_never_raises_on_hostile_bytes(tail: bytes, extra: int) -> None:
    data = b"RIFF" + tail[:4].ljust(4, b"\x00") + b"WAVE" + tail[4:]
    info = parse_wav(data, len(data) + extra)
    if info is not None:
        for offset, value in info.patches():
            assert 0 <= offset <= len(data) - 4 and len(value) == 4


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (_wav(0, b""), AudioFormat.WAV),
        (bytes.fromhex("1a45dfa3 9f 4286 81 01 4282 84") + b"webm", AudioFormat.WEBM),
        (bytes.fromhex("1a45dfa3 a3 4286 81 01 4282 88") + b"matroska", AudioFormat.MATROSKA),
        (b"OggS\x00\x02", AudioFormat.OGG),
        (b"fLaC\x00\x00\x00\x22", AudioFormat.FLAC),
        (b"ID3\x04\x00", AudioFormat.MP3),
        (b"\xff\xfb\x90\x64", AudioFormat.MP3),
        (b"\xff\xf1\x50\x80", AudioFormat.AAC),
        (b"\x00\x00\x00\x20ftypM4A ", AudioFormat.MP4),
        (b"", None),
        (b"\x1a", None),
        (b"hello world", None),
        (b"RIFF\x00\x00\x00\x00AVI ", None),
    ],
)
def test_detect_format(head: bytes, expected: AudioFormat | None) -> None:
    assert detect_format(head) is expected


def test_content_types() -> None:
    assert AudioFormat.WEBM.content_type == "audio/webm"
    assert is_wav_content_type("audio/wav")
    assert is_wav_content_type("Audio/X-WAV; codecs=1")
    assert not is_wav_content_type("audio/webm;codecs=opus")


def test_describe_audio() -> None:
    data = _wav(0, b"\x00\x00" * 12000)
    assert describe_audio(data, len(data)) == {
        "format": "wav",
        "duration": 1.5,
        "sample_rate": 8000,
        "channels": 1,
        "bits_per_sample": 16,
    }
    webm = bytes.fromhex("1a45dfa3 9f 4286 81 01 4282 84") + b"webm"
    assert describe_audio(webm, 1000) == {"format": "webm"}
    assert describe_audio(b"RIFF\x00\x00\x00\x00WAVE", 12) == {"format": "wav"}
    assert describe_audio(b"plain text", 10) == {}
