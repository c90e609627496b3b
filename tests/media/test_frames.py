"""The one MP3/ADTS frame walker (:class:`mmstream.mpeg.AudioFrames`) on real files made by
ffmpeg, and its two users: the sync parser and the time parser see the same frames however
the bytes are cut."""

from __future__ import annotations

import functools
from itertools import accumulate, pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_files import encoded, needs_tools, packets

from mmstream.audio_sync import StreamSync
from mmstream.media import TimeParser
from mmstream.mpeg import AudioFrame, AudioFrames

#: kind → ffmpeg output options: MPEG-1, -2 and -2.5 layer III (CBR with an Info frame and
#: an ID3v2 tag, VBR with a Xing frame), layer II, and AAC in ADTS at two rates.
KINDS = {
    "mp3-cbr": ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"],
    "mp3-vbr-22k": ["-ar", "22050", "-ac", "1", "-c:a", "libmp3lame", "-q:a", "5", "-f", "mp3"],
    "mp3-11k": ["-ar", "11025", "-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"],
    "mp2": ["-ar", "48000", "-c:a", "mp2", "-b:a", "192k", "-f", "mp2"],
    "aac": ["-c:a", "aac", "-b:a", "96k", "-f", "adts"],
    "aac-16k": ["-ar", "16000", "-ac", "1", "-c:a", "aac", "-f", "adts"],
}


@functools.cache
def made(kind: str) -> bytes:
    return encoded(*KINDS[kind], seconds=3)


def pieces(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    at, out = 0, []
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        out.append((at, data[at:cut]))
        at = max(at, cut)
    return out


def frames_of(parts: list[tuple[int, bytes]]) -> list[AudioFrame]:
    walker, frames = AudioFrames(), []
    for start, part in parts:
        walker.feed(part, start, frames)
    return frames


@needs_tools
@pytest.mark.parametrize("kind", KINDS)
def test_frames_are_ffprobes_packets(kind: str) -> None:
    data = made(kind)
    frames = frames_of([(0, data)])
    audio = [f for f in frames if not f.info]
    assert [f.offset for f in audio] == [pos for _, pos in packets(data)]
    assert sum(f.duration for f in audio) == pytest.approx(3.0, abs=0.2)  # encoder delay, padding
    assert all(a.offset + a.length == b.offset for a, b in pairwise(frames))


@needs_tools
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(KINDS)), cuts=st.lists(st.integers(min_value=0), max_size=60))
def test_sync_and_time_parsers_see_the_same_frames(kind: str, cuts: list[int]) -> None:
    data = made(kind)
    parts = pieces(data, cuts)
    frames = frames_of(parts)
    assert frames == frames_of([(0, data)])
    sync, times = StreamSync(), TimeParser(spacing=0.0)
    synced, timed = [], []
    for _, part in parts:
        synced += sync.feed(part)
        timed += times.feed(part)
    assert synced == [f.offset for f in frames]
    audio = [f for f in frames if not f.info]
    assert [p.offset for p in timed] == [f.offset for f in audio]
    clock = [0.0, *accumulate(f.duration for f in audio)]
    assert [p.time for p in timed] == pytest.approx(clock[:-1])
    assert times.time == pytest.approx(clock[-1])


def test_a_frame_with_a_reserved_rate_is_no_sync_point() -> None:
    """The time parser skipped it (no duration) while the sync parser offered it to
    listeners: the two walkers disagreed on what a frame is."""
    length = 200
    head = bytes([0xFF, 0xF1, 0x50, 0x80 | (length >> 11), (length >> 3) & 0xFF,
                  ((length & 7) << 5) | 0x1F, 0xFC])  # fmt: skip
    good = head + bytes(length - len(head))
    bad = bytearray(good)
    bad[2] = (bad[2] & 0xC3) | (13 << 2)  # sampling frequency index 13: reserved
    data = good + bytes(bad) + good
    times = TimeParser(spacing=0.0)
    assert [p.offset for p in times.feed(data)] == [0, 2 * length]
    assert StreamSync().feed(data) == [0, 2 * length]
