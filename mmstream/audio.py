"""What mmstream knows about audio: sniff a stream's format and make streamed WAVs whole.

Pure functions over a stream's leading bytes (no I/O), so the manager can call them at
finalize, ``stat`` can report a WAV's duration, and the tests need no server.

Recorders that stream WAV (``sox ... -t wav -``, ``arecord``, Python's :mod:`wave` on a pipe)
cannot seek back to fix the header, so the RIFF and ``data`` sizes they leave are placeholders:
0, 0xFFFFFFFF, a huge guess (sox writes ~2 GiB), or the size of the first block written
(:mod:`wave`). Many players refuse such files or stop early. :meth:`WavInfo.patches` says which
4-byte little-endian fields to overwrite once the final size is known: the RIFF size, the
``data`` size and, for uncompressed samples, the ``fact`` frame count.

Not handled (left untouched): RF64/BW64, big-endian RIFX, WAVs whose ``data`` chunk starts
beyond :data:`HEAD_SIZE`.
"""

from __future__ import annotations

import enum
import struct

import attrs
from attrs import validators as v

__all__ = [
    "HEAD_SIZE",
    "WAV_CONTENT_TYPES",
    "AudioFormat",
    "WavInfo",
    "describe_audio",
    "detect_format",
    "is_wav_content_type",
    "parse_wav",
    "wav_repairs",
]

#: Leading bytes to read for detection and for a WAV header (chunks before ``data`` fit).
HEAD_SIZE = 64 * 1024

_U32_MAX = 0xFFFFFFFF
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE = b"\x42\x82"

WAV_CONTENT_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})


class AudioFormat(enum.Enum):
    """A container recognised by its magic bytes; the value is its content type."""

    WAV = "audio/wav"
    WEBM = "audio/webm"
    MATROSKA = "audio/x-matroska"
    OGG = "audio/ogg"
    FLAC = "audio/flac"
    MP3 = "audio/mpeg"
    AAC = "audio/aac"
    MP4 = "audio/mp4"

    @property
    def content_type(self) -> str:
        return self.value


def is_wav_content_type(content_type: str) -> bool:
    """``audio/wav``, ``audio/x-wav; codecs=1`` and friends."""
    return content_type.partition(";")[0].strip().lower() in WAV_CONTENT_TYPES


def detect_format(head: bytes) -> AudioFormat | None:
    """The container ``head`` starts with, or ``None`` (too short, or not one we know)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return AudioFormat.WAV
    if head[:4] == _EBML_MAGIC:
        return _ebml_doctype(head)
    if head[:4] == b"OggS":
        return AudioFormat.OGG
    if head[:4] == b"fLaC":
        return AudioFormat.FLAC
    if head[4:8] == b"ftyp":
        return AudioFormat.MP4
    if head[:3] == b"ID3":
        return AudioFormat.MP3
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; layer bits 00 mean an AAC ADTS header instead.
        return AudioFormat.AAC if head[1] & 0x06 == 0 else AudioFormat.MP3
    return None


def _ebml_doctype(head: bytes) -> AudioFormat:
    """WebM is Matroska with DocType "webm"; the DocType sits in the first few dozen bytes."""
    at = head.find(_EBML_DOCTYPE, 4, 64)
    if at >= 0 and len(head) > at + 2:
        size = head[at + 2] & 0x7F  # a 1-byte EBML size: 0x84 → 4
        if head[at + 3 : at + 3 + size] == b"matroska":
            return AudioFormat.MATROSKA
    return AudioFormat.WEBM


_FMT = struct.Struct("<HHIIHH")

#: PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE (sox writes it for >16-bit or >2 channels).
_UNCOMPRESSED = frozenset({0x0001, 0x0003, 0xFFFE})

#: Chunks that follow ``data`` in files made by real tools (metadata, cue points, padding).
_TRAILING_CHUNKS = frozenset(
    {b"LIST", b"id3 ", b"ID3 ", b"bext", b"cue ", b"smpl", b"inst", b"fact", b"JUNK",
     b"junk", b"PAD ", b"iXML", b"_PMX", b"acid", b"DISP", b"labl", b"umid", b"afsp"}
)  # fmt: skip


@attrs.frozen
class WavInfo:
    """A WAV header as found, and the sizes it should state for a stream of ``total_size``."""

    format_tag: int
    channels: int = attrs.field(validator=v.ge(1))
    sample_rate: int = attrs.field(validator=v.ge(1))
    byte_rate: int
    block_align: int
    bits_per_sample: int
    total_size: int = attrs.field(validator=v.ge(12))
    #: Where the sample bytes start (just after the ``data`` chunk header).
    data_offset: int
    declared_riff_size: int
    declared_data_size: int
    #: Where the ``fact`` chunk's sample count is, if the file has one before ``data``.
    fact_offset: int | None
    declared_fact_frames: int | None
    #: The size the ``data`` chunk really has in a stream of ``total_size`` bytes.
    data_size: int = attrs.field(validator=v.ge(0))

    @property
    def riff_size(self) -> int:
        return min(self.total_size - 8, _U32_MAX)

    @property
    def frames(self) -> int:
        return self.data_size // self.block_align if self.block_align else 0

    @property
    def duration(self) -> float | None:
        """Seconds of audio, from the fmt chunk; ``None`` if the header states no rate."""
        if self.byte_rate <= 0:
            return None
        return self.data_size / self.byte_rate

    def patches(self) -> list[tuple[int, bytes]]:
        """``(offset, 4 bytes)`` writes that make the header state the real sizes."""
        out: list[tuple[int, bytes]] = []
        if self.declared_riff_size != self.riff_size:
            out.append((4, struct.pack("<I", self.riff_size)))
        data_size = min(self.data_size, _U32_MAX)
        if self.declared_data_size != data_size:
            out.append((self.data_offset - 4, struct.pack("<I", data_size)))
        # The fact count is frames only for uncompressed samples (ADPCM packs many per block).
        if (
            self.fact_offset is not None
            and self.format_tag in _UNCOMPRESSED
            and self.declared_fact_frames != min(self.frames, _U32_MAX)
        ):
            out.append((self.fact_offset, struct.pack("<I", min(self.frames, _U32_MAX))))
        return out


def parse_wav(head: bytes, total_size: int) -> WavInfo | None:
    """Read the RIFF/WAVE header in ``head`` (the first bytes of a ``total_size`` stream).

    ``None`` when it is not a WAV, or the ``fmt `` or ``data`` chunk is missing, malformed
    or not within ``head``: callers then leave the stream alone.
    """
    if total_size < 12 or detect_format(head) is not AudioFormat.WAV:
        return None
    head = head[:total_size]
    (declared_riff,) = struct.unpack_from("<I", head, 4)
    fmt: tuple[int, int, int, int, int, int] | None = None
    fact_offset: int | None = None
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (size,) = struct.unpack_from("<I", head, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < _FMT.size or body + _FMT.size > len(head):
                return None
            fmt = _FMT.unpack_from(head, body)
        elif chunk_id == b"fact" and size >= 4 and body + 4 <= len(head):
            fact_offset = body
        elif chunk_id == b"data":
            if fmt is None:
                return None
            tag, channels, rate, byte_rate, align, bits = fmt
            if channels < 1 or rate < 1:
                return None
            return WavInfo(
                format_tag=tag,
                channels=channels,
                sample_rate=rate,
                byte_rate=byte_rate,
                block_align=align,
                bits_per_sample=bits,
                total_size=total_size,
                data_offset=body,
                declared_riff_size=declared_riff,
                declared_data_size=size,
                fact_offset=fact_offset,
                declared_fact_frames=(
                    struct.unpack_from("<I", head, fact_offset)[0] if fact_offset else None
                ),
                data_size=_real_data_size(head, total_size, body, size),
            )
        pos = body + size + (size & 1)
    return None


def _real_data_size(head: bytes, total_size: int, data_offset: int, declared: int) -> int:
    """Trust the declared size only if the bytes after it are well-formed chunks that end
    exactly at the end of the stream; otherwise the samples run to the end.

    Audio samples can look like a chunk header by chance (4 printable bytes), so a walk that
    leaves ``head`` before reaching the end is trusted only through chunk ids seen in the wild.
    """
    to_end = total_size - data_offset
    if declared > to_end:
        return to_end
    pos = data_offset + declared + (declared & 1)
    if pos >= total_size:
        return declared
    all_known = True
    while pos + 8 <= min(total_size, len(head)):
        chunk_id = head[pos : pos + 4]
        if not all(0x20 <= b <= 0x7E for b in chunk_id):
            return to_end
        all_known = all_known and chunk_id in _TRAILING_CHUNKS
        (size,) = struct.unpack_from("<I", head, pos + 4)
        pos += 8 + size + (size & 1)
        if pos >= total_size:
            return declared if pos - total_size <= 1 else to_end
    if pos + 8 > total_size:  # a few stray bytes that cannot be a chunk
        return to_end
    return declared if all_known else to_end


def wav_repairs(content_type: str, head: bytes, total_size: int) -> list[tuple[int, bytes]]:
    """The header writes that finalize applies: only for a stream declared as WAV whose
    bytes are a WAV with wrong sizes (nothing is rewritten in a stream of another type)."""
    if not is_wav_content_type(content_type):
        return []
    info = parse_wav(head, total_size)
    return info.patches() if info is not None else []


def describe_audio(head: bytes, total_size: int) -> dict[str, str | int | float]:
    """What ``stat`` shows about a stream's audio: its container and, for a WAV, duration
    (so far, while uploading), sample rate, channels and sample size. ``{}`` if unknown."""
    found = detect_format(head)
    if found is None:
        return {}
    out: dict[str, str | int | float] = {"format": found.name.lower()}
    info = parse_wav(head, total_size) if found is AudioFormat.WAV else None
    if info is not None:
        if info.duration is not None:
            out["duration"] = round(info.duration, 3)
        out |= {"sample_rate": info.sample_rate, "channels": info.channels,
                "bits_per_sample": info.bits_per_sample}  # fmt: skip
    return out
