"""The time parsers, on real files (ffmpeg, sox) checked against ffprobe, and by hand."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_files import KINDS, SECONDS, media, needs_tools, opus_file, packets

from mmstream.audio import AudioFormat
from mmstream.media import IndexPoint, TimeParser, frame_duration

#: How far a point's time may be from ffprobe's time of the packet at its offset: the Opus
#: pre-skip ffprobe shows as negative time (6.5 ms), and float rounding.
TOLERANCE = 0.01

FORMATS = {"opus": AudioFormat.OGG, "vorbis": AudioFormat.OGG, "webm": AudioFormat.WEBM,
           "mp3": AudioFormat.MP3, "aac": AudioFormat.AAC, "wav": AudioFormat.WAV}  # fmt: skip


def feed_in_pieces(data: bytes, cuts: list[int]) -> tuple[TimeParser, list[IndexPoint]]:
    parser, points, at = TimeParser(), [], 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        points += parser.feed(data[at:cut])
        at = max(at, cut)
    return parser, points


@needs_tools
@pytest.mark.parametrize("kind", KINDS)
def test_points_match_ffprobe(kind: str) -> None:
    """Each point is where a packet starts (or its page/cluster), at that packet's time."""
    data = media(kind)
    parser = TimeParser()
    points = parser.feed(data)
    assert parser.format is FORMATS[kind] and parser.timed
    assert len(points) >= SECONDS - 1
    assert [p.offset for p in points] == sorted({p.offset for p in points})
    assert [p.time for p in points] == sorted(p.time for p in points)
    assert points[-1].time <= parser.time
    assert abs(parser.time - SECONDS) < 0.1
    if kind == "wav":
        assert all(p.time == (p.offset - 44) / 16000 for p in points)
        return
    found = packets(data)
    for point in points:
        pts, _ = next(item for item in found if item[1] >= point.offset)
        assert abs(pts - point.time) <= TOLERANCE, (point, pts)


@needs_tools
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_the_same_index(kind: str, cuts: list[int]) -> None:
    data = media(kind)
    whole = TimeParser()
    expected = whole.feed(data)
    parser, points = feed_in_pieces(data, cuts)
    assert points == expected
    assert parser.time == whole.time


@needs_tools
@given(cuts=st.lists(st.integers(min_value=0), max_size=200))
@settings(max_examples=20, deadline=None)
def test_tiny_pieces_too(cuts: list[int]) -> None:
    data = media("opus")[:20000]
    assert feed_in_pieces(data, [*cuts, *range(0, 20000, 7)])[1] == TimeParser().feed(data)


@needs_tools
@pytest.mark.parametrize("kind", ["mp3", "aac", "wav"])
def test_refine_finds_the_exact_frame(kind: str) -> None:
    """Frames are kept every half second; refine walks to the one playing at the time."""
    data = media(kind)
    parser = TimeParser()
    points = parser.feed(data)
    found = packets(data) if kind != "wav" else []
    for wanted in (0.0, 0.26, 3.333, 7.01, 11.5):
        point = max((p for p in points if p.time <= wanted), key=lambda p: p.time)
        following = [p.offset for p in points if p.offset > point.offset]
        stop = following[0] if following else len(data)
        exact = parser.refine(point, data[point.offset : stop], wanted)
        assert exact.time <= wanted + 1e-9
        if kind == "wav":
            assert wanted - exact.time < 1 / 8000 + 1e-9
            assert (exact.offset - 44) % 2 == 0
        else:
            pts = dict((pos, t) for t, pos in found)[exact.offset]
            assert abs(pts - exact.time) < 1e-3
            assert wanted - exact.time < 0.027  # within one frame


def ogg_page(payload: bytes, *, granule: int, flags: int = 0, serial: int = 7) -> bytes:
    lacing = [255] * (len(payload) // 255) + [len(payload) % 255]
    head = b"OggS" + struct.pack("<BBqIIIB", 0, flags, granule, serial, 0, 0, len(lacing))
    return head + bytes(lacing) + payload


def opus_stream(pages: int, *, preskip: int, serial: int = 7) -> bytes:
    head = b"OpusHead" + bytes([1, 1]) + preskip.to_bytes(2, "little") + bytes(7)
    out = ogg_page(head, granule=0, flags=2, serial=serial)
    out += ogg_page(b"OpusTags" + bytes(8), granule=0, serial=serial)
    for i in range(pages):
        out += ogg_page(bytes(100), granule=preskip + 48000 * (i + 1), serial=serial)
    return out


def test_opus_pre_skip_is_not_played() -> None:
    data = opus_stream(3, preskip=312)
    parser = TimeParser()
    assert [p.time for p in parser.feed(data)] == [0.0, 1.0, 2.0]
    assert parser.time == 3.0


def test_a_second_chain_continues_the_clock() -> None:
    """A new source (a new BOS page after data) starts where the last one stopped."""
    data = opus_stream(2, preskip=0) + opus_stream(2, preskip=100, serial=9)
    times = [p.time for p in TimeParser().feed(data)]
    assert times == [0.0, 1.0, 2.0, 3.0]


def test_vorbis_rate_comes_from_its_header() -> None:
    ident = b"\x01vorbis" + bytes(4) + bytes([1]) + (22050).to_bytes(4, "little") + bytes(20)
    data = ogg_page(ident, granule=0, flags=2) + ogg_page(b"\x03vorbis", granule=0)
    data += ogg_page(bytes(50), granule=22050) + ogg_page(bytes(50), granule=44100)
    assert [p.time for p in TimeParser().feed(data)] == [0.0, 1.0]


def test_other_ogg_codecs_have_no_clock() -> None:
    data = ogg_page(b"\x7fFLAC" + bytes(30), granule=0, flags=2) + ogg_page(bytes(9), granule=9)
    parser = TimeParser()
    assert parser.feed(data) == []


MP3_FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)  # MPEG-1 L3 128 kb/s 44.1 kHz


def test_mp3_id3_and_xing_count_for_nothing() -> None:
    id3 = b"ID3\x04\x00\x00" + bytes([0, 0, 1, 0]) + bytes(128)
    xing = bytearray(MP3_FRAME)
    xing[36:40] = b"Xing"
    data = id3 + bytes(xing) + MP3_FRAME * 40
    parser = TimeParser(spacing=0.0)
    points = parser.feed(data)
    assert points[0] == IndexPoint(0.0, len(id3) + len(xing))
    assert len(points) == 40
    assert parser.time == pytest.approx(40 * 1152 / 44100)
    assert frame_duration(MP3_FRAME) == 1152 / 44100


def test_garbage_is_skipped_not_timed() -> None:
    data = MP3_FRAME * 3 + b"\xff\x00junk" * 20 + MP3_FRAME * 3
    parser = TimeParser(spacing=0.0)
    assert len(parser.feed(data)) == 6


def test_unknown_containers_are_untimed() -> None:
    parser = TimeParser()
    assert parser.feed(b"\x00" * 100) == []
    assert parser.format is None and not parser.timed


@needs_tools
def test_a_webm_restarted_by_a_new_source_goes_on_where_the_last_cluster_ends() -> None:
    """A source that dies after a whole cluster and a new one that sends a fresh EBML
    header: the new clock starts at the end of the old stream's last block, not at the
    start of its last cluster (which played a cluster's worth of audio twice in the time
    index: two points for one time)."""
    first = opus_file("-cluster_time_limit", "1000", "-f", "webm", seconds=3)
    clusters = TimeParser().feed(first)
    assert len(clusters) >= 3
    cut = first[: clusters[-1].offset]  # it ends with the cluster before the last one
    ended = clusters[-1].time  # where that cluster's audio ends: the next one starts
    parser = TimeParser()
    parser.feed(cut)
    assert parser.time == pytest.approx(ended, abs=0.002)
    restarted = parser.feed(opus_file("-cluster_time_limit", "1000", "-f", "webm", seconds=2))
    assert restarted[0].time == pytest.approx(ended, abs=0.002)


def _element(ident: bytes, payload: bytes) -> bytes:
    return ident + bytes([0x40 | len(payload) >> 8, len(payload) & 0xFF]) + payload


def _webm(cluster_ms: int, blocks: bytes) -> bytes:
    unknown = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    return (
        _element(b"\x1a\x45\xdf\xa3", _element(b"\x42\x82", b"webm"))
        + b"\x18\x53\x80\x67" + unknown
        + _element(b"\x15\x49\xa9\x66", _element(b"\x2a\xd7\xb1", (10**6).to_bytes(3, "big")))
        + b"\x1f\x43\xb6\x75" + unknown
        + _element(b"\xe7", cluster_ms.to_bytes(2, "big"))
        + blocks
    )  # fmt: skip


def test_a_webm_block_lasts_its_block_duration() -> None:
    """A ``BlockGroup``'s ``BlockDuration`` says where its audio ends; a ``SimpleBlock``
    lasts as long as the gap from the block before it."""
    group = _element(b"\xa0", _element(b"\xa1", b"\x81\x00\x64\x00" + bytes(40))
                     + _element(b"\x9b", (500).to_bytes(2, "big")))  # fmt: skip
    simple = b"".join(_element(b"\xa3", b"\x81" + t.to_bytes(2, "big") + b"\x00" + bytes(30))
                      for t in (0, 20, 40))  # fmt: skip
    parser = TimeParser()
    parser.feed(_webm(1000, group))
    assert parser.time == pytest.approx(1.6)  # 1 s + 100 ms + 500 ms
    restarted = parser.feed(_webm(0, simple))
    assert restarted[0].time == pytest.approx(1.6)
    assert parser.time == pytest.approx(1.6 + 0.060)
