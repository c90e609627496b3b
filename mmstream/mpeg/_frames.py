"""MPEG audio and ADTS frames, read incrementally: the one frame walker every MP3/AAC reader
uses.

:class:`AudioFrames` is fed a stream's bytes in order, in pieces of any size, and reports
each frame whose head is complete as an :class:`AudioFrame`; its body is skipped, not
buffered, so memory stays at one frame head whatever the stream's length. An ID3v2 tag is
skipped; bytes that are not a frame (garbage, a source cut mid-frame) are skipped up to the
next possible frame sync. The first frame of a stream may be a Xing/Info/VBRI frame (the
encoder's table of contents, silent): it is reported with ``info`` set, since a decoder can
start there but it holds no audio.
"""

from __future__ import annotations

from typing import NamedTuple

from .._chunks import Chunked

__all__ = ["AudioFrame", "AudioFrames", "frame_duration", "frame_length"]

_MP3_BITRATES = {
    1: (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),  # MPEG-1 L1
    2: (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),  # MPEG-1 L2
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 L3
}
_MP3_LSF_BITRATES = {  # MPEG-2 and 2.5, by layer
    1: (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    3: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
#: Sample rates by version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5; 1 is reserved).
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_LAYER = {1: 3, 2: 2, 3: 1}  # header bits → layer number
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
               8000, 7350)  # fmt: skip

#: Bytes of a frame head: enough to read any frame's length and duration (ADTS: 7).
HEAD_SIZE = 7
#: Bytes buffered before a frame is read: an ID3v2 tag's head is 10.
_LOOK = 10
#: Bytes of a stream's first frame read before it is skipped: its head and a Xing tag.
_FIRST_PEEK = 48


def _is_adts(head: bytes | bytearray) -> bool:
    return head[1] & 0xF6 == 0xF0  # a 12-bit sync, then layer bits 00


def frame_length(head: bytes | bytearray) -> int:
    """The length of the MPEG audio or ADTS frame whose header starts ``head`` (at least
    :data:`HEAD_SIZE` bytes); 0 if it is not one a decoder can play (a reserved field, a
    free-format bit rate, a length shorter than its own header, no duration)."""
    if len(head) < HEAD_SIZE or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return 0
    if not frame_duration(head):
        return 0
    if _is_adts(head):
        length = ((head[3] & 0x03) << 11) | (head[4] << 3) | (head[5] >> 5)
        return length if length >= HEAD_SIZE else 0
    version, layer = (head[1] >> 3) & 3, _LAYER[(head[1] >> 1) & 3]
    bitrate_index, rate_index = head[2] >> 4, (head[2] >> 2) & 3
    if bitrate_index in (0, 15):
        return 0
    table = _MP3_BITRATES[layer] if version == 3 else _MP3_LSF_BITRATES[layer]
    bitrate = table[bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    padding = (head[2] >> 1) & 1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    per_frame = 144 if layer == 2 or version == 3 else 72
    return per_frame * bitrate // rate + padding


def frame_duration(head: bytes | bytearray) -> float:
    """Seconds of audio in the MPEG audio or ADTS frame whose header starts ``head``
    (at least :data:`HEAD_SIZE` bytes); 0.0 if it is not one."""
    if len(head) < HEAD_SIZE or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return 0.0
    if _is_adts(head):
        rate_index = (head[2] >> 2) & 0x0F
        if rate_index >= len(_ADTS_RATES):
            return 0.0
        return 1024 * ((head[6] & 0x03) + 1) / _ADTS_RATES[rate_index]
    version, layer_bits, rate_index = (head[1] >> 3) & 3, (head[1] >> 1) & 3, (head[2] >> 2) & 3
    if version == 1 or layer_bits == 0 or rate_index == 3:
        return 0.0
    samples = 384 if layer_bits == 3 else 1152 if layer_bits == 2 or version == 3 else 576
    return samples / _MP3_RATES[version][rate_index]


def _is_info_frame(buf: bytearray) -> bool:
    """A Xing/Info/VBRI frame: the encoder's table of contents, not audio."""
    if _is_adts(buf):
        return False
    mono = buf[3] >> 6 == 3
    side = (17 if mono else 32) if (buf[1] >> 3) & 3 == 3 else (9 if mono else 17)
    at = 4 + side + (0 if buf[1] & 1 else 2)
    return bytes(buf[at : at + 4]) in (b"Xing", b"Info") or bytes(buf[36:40]) == b"VBRI"


def _id3_size(buf: bytearray) -> int:
    """Bytes after the 10-byte head of the ID3v2 tag starting ``buf`` (footer included)."""
    size = (buf[6] << 21) | (buf[7] << 14) | (buf[8] << 7) | buf[9]
    return size + (10 if buf[5] & 0x10 else 0)


class AudioFrame(NamedTuple):
    """One frame: where it starts in the stream, its length, its seconds of audio, and
    whether it is the encoder's Xing/Info/VBRI frame (no audio: see the module docstring)."""

    offset: int
    length: int
    duration: float
    info: bool = False


class AudioFrames(Chunked[AudioFrame]):
    """Feed bytes with their absolute offset (:meth:`feed`); frames are appended to ``out``."""

    def __init__(self) -> None:
        super().__init__()
        self._first = True

    def _step(self, out: list[AudioFrame]) -> int:
        buf = self._buffer
        if len(buf) < _LOOK:
            return 0
        if buf[:3] == b"ID3":
            self._skip = _id3_size(buf)
            return _LOOK
        length = frame_length(buf)
        if not length:
            at = buf.find(b"\xff", 1)  # lost: resynchronise on the next possible sync
            return len(buf) if at < 0 else at
        info = False
        if self._first:
            if len(buf) < min(length, _FIRST_PEEK):
                return 0
            self._first = False
            info = _is_info_frame(buf)
        out.append(AudioFrame(self._buffer_at, length, frame_duration(buf), info))
        used = min(length, _LOOK)
        self._skip = length - used
        return used
