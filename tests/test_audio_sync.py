"""The sans-I/O sync parsers: streams made by hand, and by ffmpeg when it is installed."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmstream.audio import AudioFormat
from mmstream.audio_sync import HEADER_LIMIT, StreamSync

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg)"
)


# -- streams made by hand ------------------------------------------------------------------


def ogg_page(payload: bytes, *, granule: int, flags: int = 0, seq: int = 0) -> bytes:
    """One Ogg page holding one packet (CRC left zero: the parser does not check it)."""
    lacing = [255] * (len(payload) // 255) + [len(payload) % 255]
    head = b"OggS" + struct.pack("<BBqIIIB", 0, flags, granule, 1234, seq, 0, len(lacing))
    return head + bytes(lacing) + payload


def ogg_stream(pages: int, size: int = 300) -> tuple[bytes, bytes, list[int]]:
    """(stream, its header, its data page offsets): OpusHead + OpusTags, then audio."""
    header = ogg_page(b"OpusHead" + bytes(11), granule=0, flags=2) + ogg_page(
        b"OpusTags" + bytes(20), granule=0, seq=1
    )
    out, points = bytearray(header), []
    for i in range(pages):
        points.append(len(out))
        out += ogg_page(bytes([i % 256]) * size, granule=960 * (i + 1), seq=i + 2)
    return bytes(out), header, points


def ebml(ident: int, body: bytes, *, unknown: bool = False) -> bytes:
    ident_bytes = ident.to_bytes((ident.bit_length() + 7) // 8, "big")
    if unknown:
        size = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    elif len(body) < 127:
        size = bytes([0x80 | len(body)])
    else:
        size = (0x4000 | len(body)).to_bytes(2, "big")
    return ident_bytes + size + body


def webm_stream(clusters: int, *, unknown_size: bool) -> tuple[bytes, bytes, list[int]]:
    head = ebml(0x1A45DFA3, ebml(0x4282, b"webm"))
    info = ebml(0x1549A966, ebml(0x2AD7B1, b"\x0f\x42\x40"))
    tracks = ebml(0x1654AE6B, ebml(0xAE, ebml(0xD7, b"\x01") + ebml(0x86, b"A_OPUS")))
    segment_head = b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff"
    header = head + segment_head + info + tracks
    out, points = bytearray(header), []
    for i in range(clusters):
        points.append(len(out))
        blocks = ebml(0xE7, bytes([i])) + ebml(0xA3, bytes(200)) + ebml(0xA3, bytes(150))
        if unknown_size:
            out += b"\x1f\x43\xb6\x75" + b"\x01\xff\xff\xff\xff\xff\xff\xff" + blocks
        else:
            out += ebml(0x1F43B675, blocks)
    return bytes(out), header, points


def feed_in_pieces(data: bytes, cuts: list[int]) -> tuple[StreamSync, list[int]]:
    sync, points, at = StreamSync(), [], 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        points += sync.feed(data[at:cut])
        at = max(at, cut)
    return sync, points


# -- tests ---------------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
@settings(max_examples=60, deadline=None)
def test_ogg_header_and_pages_whatever_the_pieces(cuts: list[int]) -> None:
    data, header, points = ogg_stream(8)
    sync, found = feed_in_pieces(data, cuts)
    assert sync.format is AudioFormat.OGG
    assert sync.header == header
    assert found == points


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30), st.booleans())
@settings(max_examples=60, deadline=None)
def test_webm_header_and_clusters_whatever_the_pieces(cuts: list[int], unknown: bool) -> None:
    data, header, points = webm_stream(6, unknown_size=unknown)
    sync, found = feed_in_pieces(data, cuts)
    assert sync.format is AudioFormat.WEBM
    assert sync.header == header
    assert found == points


def test_webm_known_segment_size_becomes_unknown_for_late_listeners() -> None:
    data, header, _ = webm_stream(2, unknown_size=False)
    sized = data.replace(
        b"\x01\xff\xff\xff\xff\xff\xff\xff", b"\x01\x00\x00\x00\x00\x00\x10\x00", 1
    )
    sync = StreamSync()
    sync.feed(sized)
    assert sync.header == header  # the segment size is unknown again


def test_ogg_new_chain_replaces_the_header() -> None:
    first, _, _ = ogg_stream(3)
    second, header2, points2 = ogg_stream(2, size=100)
    sync = StreamSync()
    sync.feed(first)
    found = sync.feed(second)
    assert sync.header == header2
    assert found == [len(first) + p for p in points2]


def test_restart_parses_a_fresh_stream_at_the_current_position() -> None:
    first, _, _ = webm_stream(2, unknown_size=True)
    cut = first[: len(first) - 100]  # a source dropped mid-cluster
    second, header2, points2 = webm_stream(2, unknown_size=True)
    sync = StreamSync()
    sync.feed(cut)
    sync.restart()
    found = sync.feed(second)
    assert sync.header == header2
    assert found == [len(cut) + p for p in points2]


def test_mp3_frames_are_sync_points() -> None:
    frame = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)  # MPEG-1 L3 128 kbit/s 44.1 kHz
    assert len(frame) == 417
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10)
    sync, found = feed_in_pieces(id3 + frame * 5, [3, 50, 700])
    assert sync.header_done and not sync.header
    assert found == [20 + 417 * i for i in range(5)]


def test_adts_frames_are_sync_points() -> None:
    length = 200
    head = bytes([0xFF, 0xF1, 0x50, 0x80 | (length >> 11), (length >> 3) & 0xFF,
                  ((length & 7) << 5) | 0x1F, 0xFC])  # fmt: skip
    frame = head + bytes(length - len(head))
    _, found = feed_in_pieces(frame * 4, [1, 201, 333])
    assert found == [0, 200, 400, 600]


def test_wav_header_and_frame_aligned_points() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(4000))
    data = buffer.getvalue()
    sync = StreamSync()
    points = sync.feed(data[:30]) + sync.feed(data[30:1001]) + sync.feed(data[1001:])
    assert sync.header == data[:44]
    assert points and all((p - 44) % 4 == 0 for p in points)
    assert points[0] == 44


def test_unknown_format_starts_at_each_piece() -> None:
    sync = StreamSync()
    assert sync.feed(b"\x00" * 5) == []  # not enough to know the format yet
    assert sync.feed(b"\x00" * 10) == [0]
    assert sync.feed(b"\x00" * 10) == [15]
    assert sync.header_done and sync.header is None


@pytest.mark.parametrize("junk", [b"\x00" * 64, bytes(range(256)) * 4])
def test_garbage_inside_ogg_resyncs_on_the_next_page(junk: bytes) -> None:
    data, header, points = ogg_stream(4)
    broken = data[: points[1]] + junk + data[points[1] :]
    sync = StreamSync()
    found = sync.feed(broken)
    assert sync.header == header
    assert found[-3:] == [p + len(junk) for p in points[1:]]


def test_an_oversized_header_is_given_up() -> None:
    huge = ogg_page(b"OpusHead" + bytes(11), granule=0, flags=2)
    tags = b"".join(ogg_page(bytes(60_000), granule=0, seq=i) for i in range(20))
    audio = ogg_page(bytes(100), granule=960, seq=99)
    sync = StreamSync()
    points = sync.feed(huge + tags + audio)
    assert len(huge + tags) > HEADER_LIMIT
    assert sync.header == b""
    assert points  # still served, from page boundaries, without a header


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("opus.ogg", ["-c:a", "libopus", "-f", "ogg"]),
        ("vorbis.ogg", ["-c:a", "libvorbis", "-f", "ogg"]),
        ("opus.webm", ["-c:a", "libopus", "-cluster_time_limit", "500", "-f", "webm"]),
        ("a.mka", ["-c:a", "libopus", "-cluster_time_limit", "500", "-f", "matroska"]),
        ("a.mp3", ["-c:a", "libmp3lame", "-f", "mp3"]),
        ("a.wav", ["-c:a", "pcm_s16le", "-f", "wav"]),
    ],
)
def test_a_late_start_from_ffmpeg_output_decodes(
    tmp_path: Path, name: str, args: list[str]
) -> None:
    """Header + data from a sync point past the middle: ffmpeg decodes it without error."""
    assert FFMPEG is not None
    source = tmp_path / name
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3", *args,
         str(source)],
        check=True,
    )  # fmt: skip
    data = source.read_bytes()
    sync, points = feed_in_pieces(data, list(range(0, len(data), 1500)))
    late = next(p for p in points if p > len(data) // 2)
    joined = tmp_path / f"late-{name}"
    joined.write_bytes((sync.header or b"") + data[late:])
    decoded = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(joined), "-f", "s16le", "-ac", "1", "-ar", "8000", "-"],
        capture_output=True,
        check=False,
    )
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stderr == b""
    seconds = len(decoded.stdout) / 16000
    assert 0.1 < seconds < 2.0
