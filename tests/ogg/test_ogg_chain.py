"""Titles as chained Ogg logical streams, on bytes (no sockets): pages, CRCs, labels, and
what ffmpeg, ffprobe and the time and sync parsers make of the result."""

from __future__ import annotations

import functools
import itertools
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ogg_pages import HEADER, page

from mmstream.audio_sync import StreamSync
from mmstream.media import TimeParser
from mmstream.ogg import (
    BOS,
    EOS,
    MAX_TITLE_BYTES,
    OggChainer,
    OggPage,
    OggPages,
    comment_packet,
    crc,
    packets,
    patch_head,
    write_pages,
)

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(
    None in (FFMPEG, FFPROBE), reason="ffmpeg is not installed (apt-get install ffmpeg)"
)
CODECS = {"opus": ["-c:a", "libopus", "-b:a", "64k"], "vorbis": ["-c:a", "libvorbis"]}


@functools.cache
def encoded(codec: str) -> bytes:
    """6 s of a tone, Ogg ``codec``, made by ffmpeg."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "a.ogg"
        subprocess.run([str(FFMPEG), "-v", "error", "-f", "lavfi", "-i",
                        "sine=frequency=440:duration=6", *CODECS[codec], str(out)],
                       check=True)  # fmt: skip
        return out.read_bytes()


def all_pages(data: bytes) -> list[OggPage]:
    found: list[OggPage] = []
    OggPages().feed(data, 0, found)
    return found


def page_crc_ok(data: bytes, found: OggPage) -> bool:
    length = len(found.head) + sum(found.head[27:])
    whole = bytearray(data[found.offset : found.offset + length])
    stored = int.from_bytes(whole[22:26], "little")
    whole[22:26] = bytes(4)
    return crc(whole) == stored


def chained(data: bytes, titles: list[tuple[int, str]], step: int = 997) -> bytes:
    """``data`` through a chainer, ``step`` bytes at a time; each title from its offset."""
    chainer, out = OggChainer(serials=itertools.count(1000).__next__), bytearray()
    cuts = [0, *(offset for offset, _ in titles), len(data)]
    names = [None, *(name for _, name in titles)]
    for (start, end), title in zip(itertools.pairwise(cuts), names, strict=True):
        for at in range(start, end, step):
            out += chainer.feed(data[at : min(at + step, end)], title)
    return bytes(out + chainer.flush())


def decode(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(FFMPEG), "-v", "error", "-i", "pipe:", *args],
                          input=data, capture_output=True, check=False)  # fmt: skip


def probe_title(data: bytes) -> str:
    return subprocess.run([str(FFPROBE), "-v", "error", "-show_entries", "stream_tags=title",
                           "-of", "default=nw=1:nk=1", "pipe:"], input=data,
                          capture_output=True, check=True).stdout.decode().strip()  # fmt: skip


# -- pages written -------------------------------------------------------------------------


@given(st.binary(max_size=70_000), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_written_pages_carry_their_packet_and_a_right_crc(packet: bytes, serial: int,
                                                          seq: int) -> None:  # fmt: skip
    data, after = write_pages([packet], serial=serial, sequence=seq, flags=BOS)
    found = all_pages(data)
    assert all(page_crc_ok(data, p) for p in found)
    assert found[0].flags & BOS and after == seq + len(found)
    with_bodies = [(p.head, data[p.offset + len(p.head) : p.offset + len(p.head)
                                 + sum(p.head[27:])]) for p in found]  # fmt: skip
    assert packets(with_bodies) == [packet]


@given(st.binary(min_size=0, max_size=5000), st.integers(-1, 2**62), st.integers(0, 2**32 - 1))
def test_a_patched_head_has_the_crc_of_the_whole_page(body: bytes, granule: int,
                                                     serial: int) -> None:  # fmt: skip
    data, _ = write_pages([body], serial=7, sequence=3, granule=960)
    first = all_pages(data)[0]
    length = len(first.head) + sum(first.head[27:])
    head = bytearray(first.head)
    patch_head(head, length, granule=granule, serial=serial, sequence=99)
    patched = bytes(head) + data[len(head) : length]
    assert struct.unpack_from("<qII", patched, 6) == (granule, serial, 99)
    assert page_crc_ok(patched, all_pages(patched)[0])


# -- comment headers -----------------------------------------------------------------------


def test_the_title_replaces_title_and_artist_and_keeps_the_rest() -> None:
    original = comment_packet(b"OpusTags" + struct.pack("<I", 3) + b"enc" + bytes(4), "x")
    again = comment_packet(original, "Artist - Song")
    assert again.startswith(b"OpusTags\x03\x00\x00\x00enc") and again.count(b"TITLE=") == 1
    assert again.endswith(b"TITLE=Artist - Song")
    vorbis = comment_packet(b"\x03vorbis" + struct.pack("<I", 1) + b"v" + struct.pack("<I", 2)
                            + struct.pack("<I", 8) + b"ARTIST=a" + struct.pack("<I", 5)
                            + b"GENRE" + b"\x01", "t")  # fmt: skip
    assert b"ARTIST" not in vorbis and b"GENRE" in vorbis and vorbis.endswith(b"TITLE=t\x01")


def test_hostile_titles_are_one_bounded_line_of_utf8() -> None:
    assert comment_packet(b"OpusTags", "a\nb\r\x00c").endswith(b"TITLE=a b  c")
    huge = comment_packet(b"OpusTags", "é" * 10_000)
    title = huge.split(b"TITLE=", 1)[1]
    assert len(title) <= MAX_TITLE_BYTES and title.decode("utf-8") == "é" * (len(title) // 2)
    # A damaged comment header (a length past its end) gives a clean one.
    assert comment_packet(b"OpusTags\xff\xff\xff\xff", "t").startswith(b"OpusTags\x08\x00\x00")


# -- the chainer on hand-made streams ------------------------------------------------------

STREAM = HEADER + b"".join(page(i) for i in range(8))


@given(st.integers(1, 400))
def test_without_a_title_the_bytes_pass_unchanged(step: int) -> None:
    assert chained(STREAM, [], step) == STREAM
    assert chained(b"ID3\x04" + STREAM, [(0, "t")], step) == b"ID3\x04" + STREAM


def test_another_ogg_codec_passes_unchanged() -> None:
    flac = STREAM.replace(b"OpusHead", b"\x7fFLAC\x01\x00\x00")
    assert chained(flac, [(0, "t")]) == flac


# -- the chainer on ffmpeg's streams -------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("step", [1, 211, 4096, 100_000])
def test_chains_are_valid_and_any_split_gives_the_same_bytes(codec: str, step: int) -> None:
    data = encoded(codec)
    titles = [(len(data) // 3, "First"), (2 * len(data) // 3, "Second — 2")]
    out = chained(data, titles, step)
    assert out == chained(data, titles)
    found = all_pages(out)
    assert all(page_crc_ok(out, p) for p in found)
    starts = [p for p in found if p.flags & BOS]
    assert [p.serial for p in starts][1:] == [1000, 1001]
    assert sum(1 for p in found if p.flags & EOS) >= 2
    by_serial: dict[int, list[OggPage]] = {}
    for p in found:
        by_serial.setdefault(p.serial, []).append(p)
    for pages in by_serial.values():  # each logical stream: pages 0, 1, 2...; granules grow
        assert [p.sequence for p in pages] == list(range(len(pages)))
        granules = [p.granule for p in pages if p.granule >= 0]
        assert granules == sorted(granules)
    # Every chain is a stream of its own, with its title.
    offsets = [p.offset for p in starts] + [len(out)]
    assert [probe_title(out[a:b]) for a, b in itertools.pairwise(offsets)] == [
        "", "First", "Second — 2"]  # fmt: skip


@needs_ffmpeg
@pytest.mark.parametrize("codec", CODECS)
def test_ffmpeg_decodes_the_chained_stream_whole(codec: str) -> None:
    data = encoded(codec)
    out = chained(data, [(len(data) // 3, "First"), (2 * len(data) // 3, "Second")])
    plain, chain = decode(data, "-f", "s16le", "-"), decode(out, "-f", "s16le", "-")
    assert chain.returncode == 0 and chain.stderr == b""
    # What a chain's decoder restart costs: Opus' pre-skip (and the last page's end
    # trimming), under 30 ms per chain; Vorbis nothing.
    assert 0 <= len(plain.stdout) - len(chain.stdout) <= 2 * 2 * 48 * 30


@needs_ffmpeg
@pytest.mark.parametrize("codec", CODECS)
def test_time_index_runs_on_across_chains_and_late_joiners_get_the_new_header(
    codec: str,
) -> None:
    data = encoded(codec)
    out = chained(data, [(len(data) // 2, "Half")])
    before, after = TimeParser(), TimeParser()
    points = before.feed(data), after.feed(out)
    assert abs(before.time - after.time) < 0.05
    times = [p.time for p in points[1]]
    assert times == sorted(times)
    sync = StreamSync()
    points = sync.feed(out)
    assert sync.header is not None and b"TITLE=Half" in sync.header
    late = sync.header + out[points[-3] :]  # a listener joining near the end
    assert probe_title(late) == "Half" and decode(late, "-f", "null", "-").stderr == b""
