"""Opus as the codec, whatever carries it: the identification header (``OpusHead``, RFC 7845
§5.1) and a packet's duration from its table-of-contents byte (RFC 6716 §3.1).

What HLS needs to re-wrap a stream's Opus packets into fMP4 without decoding them: the
decoder's parameters for the ``dOps`` box, and each packet's length in 48 kHz samples for
the ``trun`` box (neither Ogg nor WebM store per-packet durations; the TOC byte has them).
"""

from __future__ import annotations

import attrs
from attrs import validators as v

__all__ = ["OpusHead", "packet_samples", "parse_opus_head"]

#: Samples (at 48 kHz) of one frame, by TOC configuration number (RFC 6716 §3.1, Table 2):
#: SILK NB/MB/WB 10, 20, 40, 60 ms; Hybrid SWB/FB 10, 20 ms; CELT NB/WB/SWB/FB 2.5, 5,
#: 10, 20 ms.
_FRAME_SAMPLES = (
    (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4
)  # fmt: skip
#: No packet lasts longer than 120 ms (RFC 6716 §3.2.5).
_MAX_PACKET_SAMPLES = 5760


@attrs.frozen
class OpusHead:
    """The decoder's parameters from an ``OpusHead`` packet: what ``dOps`` carries."""

    channels: int = attrs.field(validator=v.and_(v.ge(1), v.le(255)))
    preskip: int = attrs.field(validator=v.and_(v.ge(0), v.le(0xFFFF)))
    input_rate: int = attrs.field(validator=v.and_(v.ge(0), v.le(0xFFFFFFFF)))
    gain: int = attrs.field(validator=v.and_(v.ge(-0x8000), v.le(0x7FFF)))
    family: int = attrs.field(validator=v.and_(v.ge(0), v.le(255)))
    #: ``(stream count, coupled count, channel mapping)``; empty for family 0.
    mapping: bytes = b""

    def same_decoder(self, other: OpusHead) -> bool:
        """Whether packets made for ``other`` decode with the decoder set up for this head:
        a chained Ogg stream (a new title) may change its pre-skip and tags, and between
        mono and stereo (family 0: an Opus decoder outputs either from any packet, RFC 6716
        §4), not its multistream layout."""
        if self.family == other.family == 0:
            return True
        return (self.channels, self.family, self.mapping) == (
            other.channels, other.family, other.mapping)  # fmt: skip


def parse_opus_head(packet: bytes) -> OpusHead | None:
    """The ``OpusHead`` identification header (little-endian), or ``None`` if ``packet``
    is not a valid one (another codec, a truncated page, a version we cannot read)."""
    if len(packet) < 19 or packet[:8] != b"OpusHead" or packet[8] >> 4 != 0:
        return None  # a major version other than 0 is not compatible (RFC 7845 §5.1)
    channels, family = packet[9], packet[18]
    mapping = b""
    if family != 0:
        mapping = packet[19 : 21 + channels]
        if len(mapping) != 2 + channels or mapping[0] == 0 or mapping[1] > mapping[0]:
            return None
    elif channels > 2:
        return None
    if channels == 0:
        return None
    return OpusHead(
        channels=channels,
        preskip=int.from_bytes(packet[10:12], "little"),
        input_rate=int.from_bytes(packet[12:16], "little"),
        gain=int.from_bytes(packet[16:18], "little", signed=True),
        family=family,
        mapping=bytes(mapping),
    )


def packet_samples(packet: bytes | memoryview) -> int:
    """The packet's duration in 48 kHz samples from its TOC byte: frame size times frame
    count (code 0: one frame; 1 and 2: two; 3: the count in the next byte). 0 for a packet
    that is not valid Opus (empty, a code 3 without its count, longer than 120 ms). A
    multistream packet's first stream gives the duration of all of them."""
    if not packet:
        return 0
    toc = packet[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    elif len(packet) < 2:
        return 0
    else:
        frames = packet[1] & 0x3F
    samples = frames * _FRAME_SAMPLES[toc >> 3]
    return samples if samples <= _MAX_PACKET_SAMPLES else 0
