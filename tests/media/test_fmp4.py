"""fMP4/CMAF segments for Opus, without a server: the boxes parsed back with a tiny box
walker, the packets taken out of real Ogg and WebM files (ffmpeg), their timing against the
time index, chained Ogg, and hostile bytes."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_files import FFMPEG, FFPROBE, media, needs_tools, opus_file

from mmstream.audio import AudioFormat, detect_format
from mmstream.audio_sync import StreamSync
from mmstream.media import (
    OpusHead,
    OpusTrack,
    TimeParser,
    init_segment,
    opus_packets,
    opus_track,
    packet_samples,
    parse_opus_head,
)
from mmstream.web.hls import Segment, fmp4_segment, hls_kind, plan_segments

#: Boxes whose payload is only boxes.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"mvex", b"moof", b"traf"}
#: Boxes whose payload is some fields, then boxes: how many bytes of fields.
_FIELDS_FIRST = {b"stsd": 8, b"Opus": 28, b"dref": 8}

Box = tuple[bytes, bytes, list["Box"]]


def boxes(data: bytes) -> list[Box]:
    """``(type, payload, children)`` of each box; the sizes must add up exactly."""
    found: list[Box] = []
    at = 0
    while at < len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        assert 8 <= size <= len(data) - at, (kind, size)
        payload = data[at + 8 : at + size]
        skip = 0 if kind in _CONTAINERS else _FIELDS_FIRST.get(kind)
        found.append((kind, payload, [] if skip is None else boxes(payload[skip:])))
        at += size
    return found


def find(tree: list[Box], path: str) -> bytes:
    """The payload at ``path`` ("moov/trak/mdia/mdhd")."""
    first, _, rest = path.partition("/")
    for kind, payload, children in tree:
        if kind == first.encode():
            return find(children, rest) if rest else payload
    raise AssertionError(f"no {path}")


def index_segments(data: bytes, target: float = 4.0) -> list[Segment]:
    """The segments the server plans: at the time index boundaries before n * target."""
    parser = TimeParser()
    points = parser.feed(data)
    count = int(parser.time // target) + 1
    starts = [max((p for p in points if p.time <= n * target), key=lambda p: p.time)
              for n in range(count)]  # fmt: skip
    return plan_segments([(p.time, p.offset, 0.0) for p in starts], end_time=parser.time,
                         end_offset=len(data), complete=True)  # fmt: skip


def header_of(data: bytes) -> bytes:
    sync = StreamSync()
    sync.feed(data)
    assert sync.header is not None
    return sync.header


# -- Opus itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toc", "samples"),
    [
        (bytes([0 << 3 | 0]), 480),  # SILK NB 10 ms, one frame
        (bytes([3 << 3 | 1]), 2 * 2880),  # SILK NB 60 ms, two frames
        (bytes([13 << 3 | 0]), 960),  # Hybrid SWB 20 ms
        (bytes([16 << 3 | 2]), 2 * 120),  # CELT NB 2.5 ms, two frames
        (bytes([31 << 3 | 3, 0x80 | 6]), 6 * 960),  # CELT FB 20 ms, code 3, 6 frames
        (bytes([31 << 3 | 3, 7]), 0),  # 140 ms: longer than a packet may be
        (bytes([31 << 3 | 3]), 0),  # code 3 without its frame count
        (b"", 0),
    ],
)
def test_a_packet_lasts_what_its_toc_says(toc: bytes, samples: int) -> None:
    assert packet_samples(toc) == samples


def test_opus_head_fields() -> None:
    head = b"OpusHead\x01\x02\x38\x01\x44\xac\x00\x00\xfe\xff\x00"
    assert parse_opus_head(head) == OpusHead(channels=2, preskip=312, input_rate=44100,
                                             gain=-2, family=0)  # fmt: skip
    surround = (
        b"OpusHead\x01\x06\x38\x01\x80\xbb\x00\x00\x00\x00\x01\x04\x02\x00\x04\x01\x02\x03\x05"
    )
    parsed = parse_opus_head(surround)
    assert parsed is not None and parsed.mapping == b"\x04\x02\x00\x04\x01\x02\x03\x05"
    for bad in (head[:18], b"OpusTags" + head[8:], head[:8] + b"\x10" + head[9:],
                head[:9] + b"\x03" + head[10:], surround[:-1]):  # fmt: skip
        assert parse_opus_head(bad) is None


# -- the boxes ----------------------------------------------------------------------------


@needs_tools
def test_the_init_segment_describes_the_opus_track() -> None:
    data = media("opus")
    track = opus_track(AudioFormat.OGG, header_of(data))
    assert track is not None
    init = init_segment(track.head)
    tree = boxes(init)
    assert [kind for kind, _, _ in tree] == [b"ftyp", b"moov"]
    ftyp = find(tree, "ftyp")
    assert ftyp[:4] == b"iso6" and {ftyp[i : i + 4] for i in range(8, len(ftyp), 4)} >= {
        b"iso6", b"cmfc"}  # fmt: skip
    assert struct.unpack(">I", find(tree, "moov/trak/mdia/mdhd")[12:16])[0] == 48000
    assert find(tree, "moov/trak/mdia/hdlr")[8:12] == b"soun"
    stbl = find(tree, "moov/trak/mdia/minf/stbl")
    assert [kind for kind, _, _ in boxes(stbl)] == [b"stsd", b"stts", b"stsc", b"stsz", b"stco"]
    for empty in ("stts", "stsc", "stco"):
        assert find(tree, f"moov/trak/mdia/minf/stbl/{empty}") == bytes(8)
    entry = find(tree, "moov/trak/mdia/minf/stbl/stsd/Opus")
    channels, bits, _, _, rate = struct.unpack_from(">HHHHI", entry, 16)
    assert (channels, bits, rate >> 16) == (1, 16, 48000)
    dops = find(tree, "moov/trak/mdia/minf/stbl/stsd/Opus/dOps")
    # version 0, channels, pre-skip, input rate, gain, family: OpusHead's, big-endian
    assert dops == struct.pack(">BBHIhB", 0, 1, 312, 48000, 0, 0)
    trex = find(tree, "moov/mvex/trex")
    assert struct.unpack(">IIIIII", trex)[1:3] == (1, 1)  # track 1, sample description 1


def test_dops_carries_a_channel_mapping() -> None:
    head = OpusHead(channels=3, preskip=100, input_rate=0, gain=256, family=1,
                    mapping=b"\x02\x01\x00\x02\x01")  # fmt: skip
    dops = find(boxes(init_segment(head)), "moov/trak/mdia/minf/stbl/stsd/Opus/dOps")
    assert dops == b"\x00\x03\x00\x64\x00\x00\x00\x00\x01\x00\x01" + b"\x02\x01\x00\x02\x01"


@needs_tools
@pytest.mark.parametrize(("kind", "fmt"), [("opus", AudioFormat.OGG), ("webm", AudioFormat.WEBM)])
def test_segments_carry_every_packet_continuously(kind: str, fmt: AudioFormat) -> None:
    """Every packet once, ``tfdt`` continuous from 0, each segment as long as the index
    says (the first also holds the pre-skip: decoded, then dropped by the decoder)."""
    data = media(kind)
    found = hls_kind(fmt, data[:65536])
    assert not isinstance(found, str) and found.track is not None
    track = found.track
    segments = index_segments(data)
    assert len(segments) in (3, 4)  # 12 s, and perhaps the last page (one packet) alone
    expected = 0
    total = 0
    for segment in segments:
        made = fmp4_segment(track, data[segment.start : segment.stop], segment)
        assert isinstance(made, bytes)
        tree = boxes(made)
        assert [box for box, _, _ in tree] == [b"styp", b"moof", b"mdat"]
        assert struct.unpack(">I", find(tree, "moof/mfhd")[4:])[0] == segment.sequence + 1
        tfdt = find(tree, "moof/traf/tfdt")
        assert tfdt[0] == 1 and struct.unpack(">Q", tfdt[4:])[0] == expected
        trun = find(tree, "moof/traf/trun")
        count, offset = struct.unpack_from(">Ii", trun, 4)
        entries = [struct.unpack_from(">II", trun, 12 + 8 * n) for n in range(count)]
        assert len(trun) == 12 + 8 * count
        durations = [d for d, _ in entries]
        assert set(durations) == {960}  # ffmpeg's 20 ms frames
        assert offset == len(tree[1][1]) + 8 + 8  # from the moof's start to the samples
        assert len(find(tree, "mdat")) == sum(size for _, size in entries)
        last = segment is segments[-1]
        extra = track.head.preskip if segment.sequence == 0 and fmt is AudioFormat.OGG else 0
        # Ogg granules are exact; WebM keeps whole milliseconds (48 samples)
        slack = 0 if fmt is AudioFormat.OGG else 48
        if not last:
            assert abs(sum(durations) - round(segment.duration * 48000) - extra) <= slack
        expected += sum(durations)
        total += count
    assert total == 601  # ffprobe's packet count of these files


@needs_tools
@pytest.mark.parametrize("kind", ["opus", "webm"])
def test_ffprobe_reads_init_and_a_segment_as_opus(kind: str, tmp_path: Path) -> None:
    data = media(kind)
    found = hls_kind(detect_format(data), data[:65536])
    assert not isinstance(found, str) and found.track is not None and found.init is not None
    segment = index_segments(data)[1]
    made = fmp4_segment(found.track, data[segment.start : segment.stop], segment)
    assert isinstance(made, bytes)
    path = tmp_path / "one.mp4"
    path.write_bytes(found.init + made)
    out = subprocess.run([str(FFPROBE), "-v", "error", "-show_entries",
                          "stream=codec_name,sample_rate,channels", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert out.strip() == "opus,48000,1"
    decoded = subprocess.run([str(FFMPEG), "-v", "error", "-i", str(path), "-f", "null", "-"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert (decoded.returncode, decoded.stderr) == (0, "")


def _element(ident: int, payload: bytes) -> bytes:
    """An EBML element with an 8-byte size."""
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big") + (
        (1 << 56) | len(payload)).to_bytes(8, "big") + payload  # fmt: skip


@pytest.mark.parametrize(
    ("lacing", "sizes"),
    [
        (0, b""),
        (1, bytes([255, 45, 3])),  # Xiph: 300, 3
        (2, b""),  # fixed: equal frames
        # EBML: 300 (a 2-byte vint), then 3 - 300 = -297 (a signed 2-byte vint: + 2**13 - 1)
        (3, (0x4000 | 300).to_bytes(2, "big") + (0x4000 | (8191 - 297)).to_bytes(2, "big")),
    ],
)
def test_laced_webm_blocks_give_each_frame(lacing: int, sizes: bytes) -> None:
    """Matroska lacing (none, Xiph, fixed, EBML) in an unknown-size cluster."""
    frames = {0: [b"\xfc" + b"a" * 299], 1: [b"\xfc" + b"a" * 299, b"\xfcbb", b"\xfc" + b"c" * 9],
              2: [b"\xfc" + b"d" * 9] * 3,
              3: [b"\xfc" + b"e" * 299, b"\xfcff", b"\xfcg"]}[lacing]  # fmt: skip
    count = bytes([len(frames) - 1]) if lacing else b""
    block = b"\x81\x00\x14" + bytes([0x80 | lacing << 1]) + count + sizes + b"".join(frames)
    cluster = b"\x1f\x43\xb6\x75\x01\xff\xff\xff\xff\xff\xff\xff"  # unknown size
    data = cluster + _element(0xE7, b"\x00") + _element(0xA3, block)
    head = OpusHead(channels=2, preskip=0, input_rate=48000, gain=0, family=0)
    packets = opus_packets(data, OpusTrack(head, AudioFormat.WEBM, number=1))
    assert [p for p, _ in packets.samples] == frames
    assert {d for _, d in packets.samples} == {960}  # TOC 0xfc: CELT FB 20 ms, one frame
    assert packets.lead == 20 * 48  # the block is 20 ms into its cluster


# -- chained Ogg ---------------------------------------------------------------------------


@needs_tools
def test_a_chain_with_the_same_decoder_continues_the_track() -> None:
    first = media("opus")
    second = opus_file("-b:a", "32k", "-serial_offset", "7", "-f", "ogg", seconds=4)
    data = first + second
    track = opus_track(AudioFormat.OGG, header_of(first))
    assert track is not None
    segments = index_segments(data)
    across = next(s for s in segments if s.start < len(first) < s.stop)
    packets = opus_packets(data[across.start : across.stop], track)
    assert packets.stopped is None
    assert all(packet_samples(p) == d == 960 for p, d in packets.samples)
    assert not any(p.startswith((b"OpusHead", b"OpusTags")) for p, _ in packets.samples)
    whole = sum(len(opus_packets(data[s.start : s.stop], track).samples) for s in segments)
    assert whole == 601 + 201  # both chains' packets, no header among them


@needs_tools
@pytest.mark.parametrize(
    ("options", "same"),
    [(("-ac", "2"), True), (("-af", "pan=3.0|c0=c0|c1=c0|c2=c0", "-mapping_family", "1"), False)],
)
def test_a_chain_that_needs_another_decoder_ends_the_track(
    options: tuple[str, ...], same: bool
) -> None:
    """Mono to stereo is the same decoder (an Opus decoder outputs either from any packet);
    a multistream (surround) chain is not: the segment it begins in stops there."""
    first = media("opus")
    data = first + opus_file(*options, "-serial_offset", "9", "-f", "ogg", seconds=8)
    track = opus_track(AudioFormat.OGG, header_of(first))
    assert track is not None
    across = next(s for s in index_segments(data) if s.start < len(first) < s.stop)
    packets = opus_packets(data[across.start : across.stop], track)
    if same:
        assert packets.stopped is None
        return
    assert packets.stopped is not None and "(1 in family 0 to 3 in family 1)" in packets.stopped
    assert packets.samples == opus_packets(data[across.start : len(first)], track).samples
    alone = Segment(across.sequence, len(first), across.stop, across.time, 1.0, 0.0)
    made = fmp4_segment(track, data[len(first) : across.stop], alone)
    assert isinstance(made, str) and "family 1" in made


# -- hostile bytes -------------------------------------------------------------------------


@needs_tools
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["opus", "webm"]),
    cut=st.integers(min_value=0, max_value=30000),
    noise=st.binary(max_size=64),
    at=st.integers(min_value=0, max_value=30000),
)
def test_damaged_bytes_give_fewer_packets_never_an_error(
    kind: str, cut: int, noise: bytes, at: int
) -> None:
    data = media(kind)
    found = hls_kind(detect_format(data), data[:65536])
    assert not isinstance(found, str) and found.track is not None
    segment = index_segments(data)[1]
    body = data[segment.start : segment.stop][cut:]
    body = body[:at] + noise + body[at + len(noise) :]
    packets = opus_packets(body, found.track)
    assert all(0 < d <= 5760 for _, d in packets.samples)
    assert isinstance(fmp4_segment(found.track, body, segment), bytes | str)
    damaged = data[:at] + noise + data[at + len(noise) : 65536]
    assert opus_track(detect_format(data), damaged) in (None, found.track) or noise
