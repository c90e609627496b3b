"""Fragmented MP4 (ISO/IEC 14496-12) for one Opus audio track, as CMAF wants it: an
initialisation segment (``ftyp`` + ``moov`` with empty sample tables and ``mvex``) and
media segments (``styp`` + ``moof`` + ``mdat``), written from packets as they are stored.

The Opus sample entry and its ``dOps`` box follow "Encapsulation of Opus in ISO Base Media
File Format" (opus-codec.org/docs/opus_in_isobmff.html): timescale 48000, ``dOps`` the
``OpusHead`` fields big-endian and without the magic. Pre-skip is left to the decoder
(``dOps`` carries it, as ffmpeg's HLS muxer does): no edit list, whose support in
fragmented files players differ on. Every Opus packet can start decoding (with a short
convergence), so every sample is a sync sample.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ._opus import OpusHead

__all__ = ["TIMESCALE", "box", "init_segment", "media_segment", "opus_sample_entry"]

#: Opus in ISOBMFF counts time in 48 kHz samples, whatever the input rate was.
TIMESCALE = 48000
_TRACK_ID = 1
#: ``sample_depends_on = 2``: no sample depends on another (each is a sync sample).
_SYNC_SAMPLE = 0x02000000
_UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TFHD_DEFAULT_FLAGS = 0x000020
_TRUN_DATA_OFFSET = 0x000001
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200


def box(kind: bytes, *payload: bytes) -> bytes:
    """One box: 32-bit size, four-character type, payload."""
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def opus_sample_entry(head: OpusHead) -> bytes:
    """The ``Opus`` AudioSampleEntry with its ``dOps`` (Opus in ISOBMFF §4.3.1-2)."""
    dops = struct.pack(">BBHIhB", 0, head.channels, head.preskip, head.input_rate, head.gain,
                       head.family) + head.mapping  # fmt: skip
    return box(
        b"Opus",
        b"\x00" * 6 + struct.pack(">H", 1),  # SampleEntry: reserved, data_reference_index
        struct.pack(">8xHHHHI", head.channels, 16, 0, 0, TIMESCALE << 16),
        box(b"dOps", dops),
    )


def init_segment(head: OpusHead) -> bytes:
    """``ftyp`` + ``moov`` for one Opus track: what a player needs before any segment."""
    mvhd = _full(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, TIMESCALE, 0),
                 struct.pack(">IH10x", 0x10000, 0x100), _UNITY_MATRIX, b"\x00" * 24,
                 struct.pack(">I", _TRACK_ID + 1))  # fmt: skip
    tkhd = _full(b"tkhd", 0, 0x3, struct.pack(">III4xI8xhhH2x", 0, 0, _TRACK_ID, 0, 0, 0, 0x100),
                 _UNITY_MATRIX, struct.pack(">II", 0, 0))  # enabled, in the movie  # fmt: skip
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, TIMESCALE, 0, 0x55C4, 0))  # und
    hdlr = _full(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"soun"), b"SoundHandler\x00")
    dinf = box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), opus_sample_entry(head)),
        _full(b"stts", 0, 0, struct.pack(">I", 0)),
        _full(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = box(b"minf", _full(b"smhd", 0, 0, struct.pack(">hH", 0, 0)), dinf, stbl)
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))
    trex = _full(b"trex", 0, 0, struct.pack(">IIIII", _TRACK_ID, 1, 0, 0, _SYNC_SAMPLE))
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    return ftyp + box(b"moov", mvhd, trak, box(b"mvex", trex))


def media_segment(sequence: int, decode_time: int, samples: Sequence[tuple[bytes, int]]) -> bytes:
    """``styp`` + ``moof`` + ``mdat`` holding ``samples`` (``(packet, duration)``, the
    duration in 48 kHz samples), the first decoded at ``decode_time`` (``tfdt``, in 48 kHz
    samples); ``sequence`` is the fragment's number (``mfhd``, counting from 1)."""
    entries = b"".join(struct.pack(">II", duration, len(data)) for data, duration in samples)
    flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE

    def moof(data_offset: int) -> bytes:
        trun = _full(b"trun", 0, flags, struct.pack(">Ii", len(samples), data_offset), entries)
        tfhd = _full(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF | _TFHD_DEFAULT_FLAGS,
                     struct.pack(">II", _TRACK_ID, _SYNC_SAMPLE))  # fmt: skip
        tfdt = _full(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
        return box(b"moof", _full(b"mfhd", 0, 0, struct.pack(">I", sequence)),
                   box(b"traf", tfhd, tfdt, trun))  # fmt: skip

    size = len(moof(0))  # the data offset counts from the moof's first byte to the samples
    styp = box(b"styp", b"msdh", struct.pack(">I", 0), b"msdhmsix")
    return styp + moof(size + 8) + box(b"mdat", *(data for data, _ in samples))
