"""Container knowledge that needs no I/O: where time is in a stream's bytes, and Opus
packets re-wrapped as fragmented MP4 for HLS.

Pure, incremental parsers (bytes in, in pieces of any size; results out), tested without a
server. The manager never parses audio itself: it hands bytes to what is here.
"""

from __future__ import annotations

from ._clock import MAX_SECONDS as MAX_SECONDS
from ._clock import parse_clock as parse_clock
from ._fmp4 import init_segment as init_segment
from ._fmp4 import media_segment as media_segment
from ._opus import OpusHead as OpusHead
from ._opus import packet_samples as packet_samples
from ._opus import parse_opus_head as parse_opus_head
from ._opus_packets import OpusPackets as OpusPackets
from ._opus_packets import OpusTrack as OpusTrack
from ._opus_packets import opus_packets as opus_packets
from ._opus_packets import opus_track as opus_track
from ._timing import DEFAULT_SPACING as DEFAULT_SPACING
from ._timing import IndexPoint as IndexPoint
from ._timing import TimeParser as TimeParser
from ._timing import frame_duration as frame_duration

__all__ = [
    "DEFAULT_SPACING",
    "MAX_SECONDS",
    "IndexPoint",
    "OpusHead",
    "OpusPackets",
    "OpusTrack",
    "TimeParser",
    "frame_duration",
    "init_segment",
    "media_segment",
    "opus_packets",
    "opus_track",
    "packet_samples",
    "parse_clock",
    "parse_opus_head",
]
