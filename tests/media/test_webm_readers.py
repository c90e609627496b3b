"""The one EBML element walker, and the three readers of WebM on it — the sync parser (a late listener's header and clusters), the
time parser (the time index) and the Opus packet reader (HLS fMP4) — on real files ffmpeg
makes, checked against ffprobe's packets, for any split of the bytes.

The files are Opus and Vorbis, with small clusters, as ``-live 1`` writes them, and again
with every cluster's size made unknown (what MediaRecorder and live encoders send: ffmpeg
itself writes known sizes). ffprobe reads both; its packets are the oracle."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_files import FFMPEG, FFPROBE

from mmstream.audio import AudioFormat
from mmstream.audio_sync import StreamSync
from mmstream.ebml import EbmlElement, EbmlElements, ElementId
from mmstream.media import TimeParser, opus_packets, opus_track

T = TypeVar("T")
_CLUSTER_ID = b"\x1f\x43\xb6\x75"
_UNKNOWN = b"\x01\xff\xff\xff\xff\xff\xff\xff"
#: codec → ffmpeg output options (small clusters, so a few seconds make many).
_CODECS = {
    "opus": ["-c:a", "libopus", "-b:a", "64k", "-cluster_size_limit", "3000"],
    "vorbis": ["-c:a", "libvorbis", "-cluster_time_limit", "300"],
}
CASES = [(codec, live) for codec in _CODECS for live in (False, True)]
#: A point's time against ffprobe's time of the next packet: Opus's 6.5 ms pre-skip, which
#: ffprobe shows as negative time, and ffmpeg's whole milliseconds.
TOLERANCE = 0.01


class Packet(NamedTuple):
    """ffprobe's view of one audio packet: its time, where its bytes are, how many."""

    time: float
    duration: float
    pos: int
    size: int


class WebmFile(NamedTuple):
    data: bytes
    packets: list[Packet]
    #: Where each Cluster element begins (found as ffmpeg wrote them, before any rewrite).
    clusters: list[int]

    def __repr__(self) -> str:
        return f"WebmFile({len(self.data)} bytes, {len(self.clusters)} clusters)"


Files = dict[tuple[str, bool], WebmFile]


def _cluster_heads(data: bytes, packets: list[Packet]) -> list[int]:
    """The Cluster ids before ffprobe's packets: each packet's cluster is the last Cluster
    id before it (the id cannot occur inside a packet in these files: checked)."""
    heads = []
    at = data.find(_CLUSTER_ID)
    while at >= 0:
        heads.append(at)
        at = data.find(_CLUSTER_ID, at + 1)
    for packet in packets:
        assert _CLUSTER_ID not in data[packet.pos : packet.pos + packet.size]
    return heads


def _probe(path: Path) -> list[Packet]:
    out = subprocess.run(
        [str(FFPROBE), "-v", "error", "-select_streams", "a:0", "-show_entries",
         "packet=pts_time,duration_time,pos,size", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [
        Packet(float(p["pts_time"]), float(p["duration_time"]), int(p["pos"]), int(p["size"]))
        for p in json.loads(out)["packets"]
    ]


def _unknown_sizes(data: bytes, clusters: list[int]) -> bytes:
    """``data`` with each cluster's size written as unknown (8 bytes of all ones)."""
    out, at = bytearray(), 0
    for head in clusters:
        size_length = 9 - data[head + 4].bit_length()
        out += data[at : head + 4] + _UNKNOWN
        at = head + 4 + size_length
    return bytes(out + data[at:])


def _make(tmp: Path, codec: str, live: bool) -> WebmFile:
    """A 4 s tone as WebM ffmpeg writes live (``-live 1``), its clusters of unknown size if
    ``live``."""
    path = tmp / f"{codec}-{live}.webm"
    subprocess.run([str(FFMPEG), "-v", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=4", *_CODECS[codec], "-live", "1",
                    "-f", "webm", str(path)], check=True)  # fmt: skip
    data = path.read_bytes()
    if live:
        data = _unknown_sizes(data, _cluster_heads(data, _probe(path)))
        path.write_bytes(data)
    packets = _probe(path)
    return WebmFile(data, packets, _cluster_heads(data, packets))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], WebmFile]:
    if None in (FFMPEG, FFPROBE):
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    tmp = tmp_path_factory.mktemp("webm")
    return {case: _make(tmp, *case) for case in CASES}


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _fed(feed: Callable[[bytes], list[T]], data: bytes, cuts: list[int]) -> list[T]:
    """What ``feed`` answers to ``data`` given to it in pieces cut at ``cuts``."""
    found: list[T] = []
    for piece in _pieces(data, cuts):
        found += feed(piece)
    return found


_examples = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_any_file_any_split = given(
    case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0), max_size=60)
)


def test_the_files_are_what_the_tests_say(files: Files) -> None:
    """Many clusters, every packet inside one, and the rewrite made them unknown-size."""
    for codec, live in CASES:
        file = files[codec, live]
        assert len(file.clusters) >= 8
        assert file.clusters[0] < file.packets[0].pos
        unknown = [file.data[c + 4 : c + 12] == _UNKNOWN for c in file.clusters]
        assert all(unknown) if live else not any(unknown)


@_examples
@_any_file_any_split
def test_the_sync_and_time_parsers_find_every_cluster(
    files: Files, case: tuple[str, bool], cuts: list[int]
) -> None:
    """The sync parser: a sync point per cluster, the header before the first; the time
    index: a point per cluster, at the time of its first packet, and the end of the last."""
    file = files[case]
    sync, parser = StreamSync(), TimeParser()
    assert _fed(sync.feed, file.data, cuts) == file.clusters
    assert sync.format is AudioFormat.WEBM
    assert sync.header == file.data[: file.clusters[0]]  # -live 1: the Segment's size is unknown
    assert sync.header_at == 0
    points = _fed(parser.feed, file.data, cuts)
    assert [p.offset for p in points] == file.clusters
    for point in points:
        first = next(p for p in file.packets if p.pos > point.offset)
        assert abs(first.time - point.time) <= TOLERANCE, (point, first)
    last = file.packets[-1]
    assert abs(parser.time - (last.time + last.duration)) <= TOLERANCE


@_examples
@given(live=st.booleans(), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_hls_segments_hold_every_opus_packet_once_and_in_time(
    files: Files, live: bool, cuts: list[int]
) -> None:
    """Segments cut at clusters, as HLS cuts them: their packets are ffprobe's, in order,
    and each segment decodes where the one before ends."""
    file = files["opus", live]
    header = file.data[: file.clusters[0]]
    track = opus_track(AudioFormat.WEBM, header)
    assert track is not None and track.number == 1
    index = {p.offset: p.time for p in TimeParser().feed(file.data)}
    bounds = sorted({file.clusters[c % len(file.clusters)] for c in cuts} | {file.clusters[0]})
    seen: list[bytes] = []
    end: int | None = None
    for start, stop in zip(bounds, [*bounds[1:], len(file.data)], strict=True):
        segment = opus_packets(file.data[start:stop], track)
        assert segment.stopped is None
        decode = segment.decode_time(index[start])
        if end is not None:
            assert decode == end, (start, decode, end)
        end = decode + sum(duration for _, duration in segment.samples)
        seen += [packet for packet, _ in segment.samples]
    # ffprobe's position is the block's: its track number (1: one byte), time and flags.
    assert seen == [file.data[p.pos + 4 : p.pos + 4 + p.size] for p in file.packets]


_BLOCKS = frozenset({ElementId.SIMPLE_BLOCK, ElementId.BLOCK})
_WALKED = frozenset({ElementId.SEGMENT, ElementId.CLUSTER, ElementId.BLOCK_GROUP})
#: A block's track number (one byte here), time and flags.
_BLOCK_HEADS = {ElementId.SIMPLE_BLOCK: 4, ElementId.BLOCK: 4}


def _walked(reader: EbmlElements, data: bytes, cuts: list[int]) -> list[EbmlElement]:
    """The elements ``reader`` finds in ``data`` given to it in pieces cut at ``cuts``."""
    at = 0

    def feed(piece: bytes) -> list[EbmlElement]:
        nonlocal at
        found: list[EbmlElement] = []
        reader.feed(piece, at, found)
        at += len(piece)
        return found

    return _fed(feed, data, cuts)


@_examples
@_any_file_any_split
def test_the_walker_finds_ffprobes_blocks_and_clusters(
    files: Files, case: tuple[str, bool], cuts: list[int]
) -> None:
    """Every block where ffprobe's packet is, with its track and flags read; every
    cluster where its id is; the same whatever the pieces."""
    file = files[case]
    reader = EbmlElements(enter=_WALKED, read={**_BLOCK_HEADS, ElementId.TIMECODE: 8})
    found = _walked(reader, file.data, cuts)
    blocks = [e for e in found if e.id in _BLOCKS]
    assert [b.offset + b.head for b in blocks] == [p.pos for p in file.packets]
    assert all(b.body is not None and b.body[0] == 0x81 for b in blocks)  # track 1
    assert [b.size - 4 for b in blocks] == [p.size for p in file.packets]
    assert [e.offset for e in found if e.id == ElementId.CLUSTER] == file.clusters
    unknown = [e.size < 0 for e in found if e.id == ElementId.CLUSTER]
    assert all(unknown) if case[1] else not any(unknown)


def test_garbage_and_impossible_sizes_are_skipped_to_the_next_cluster(files: Files) -> None:
    """Hostile bytes: a zero byte (no valid id), and a ``Tracks`` of unknown size (only a
    Segment or Cluster may have one) lose the walker until the next Cluster id."""
    file = files["opus", True]
    second = file.clusters[1]
    bad = b"\x00\x00garbage" + bytes.fromhex("1654ae6b01ffffffffffffff") + b"lost"
    data = file.data[:second] + bad + file.data[second:]
    whole = EbmlElements(enter=frozenset({ElementId.SEGMENT}))
    found: list[EbmlElement] = []
    whole.feed(data, 0, found)
    clusters = [e.offset for e in found if e.id == ElementId.CLUSTER]
    assert clusters == [*file.clusters[:1], *(c + len(bad) for c in file.clusters[1:])]
    assert ElementId.TRACKS not in [e.id for e in found if e.offset >= second]


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=400).map(lambda tail: bytes.fromhex("1a45dfa3") + tail),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_any_bytes_walk_the_same_whatever_the_pieces(data: bytes, cuts: list[int]) -> None:
    """Hostile bytes never raise, and the walk does not depend on where they are cut."""
    whole = _walked(EbmlElements(enter=_WALKED, read=_BLOCK_HEADS), data, [])
    assert _walked(EbmlElements(enter=_WALKED, read=_BLOCK_HEADS), data, cuts) == whole
