"""Container knowledge that needs no I/O: where time is in a stream's bytes.

Pure, incremental parsers (bytes in, in pieces of any size; results out), tested without a
server. The manager never parses audio itself: it hands bytes to what is here.
"""

from __future__ import annotations

from ._clock import MAX_SECONDS as MAX_SECONDS
from ._clock import parse_clock as parse_clock
from ._timing import DEFAULT_SPACING as DEFAULT_SPACING
from ._timing import IndexPoint as IndexPoint
from ._timing import TimeParser as TimeParser
from ._timing import frame_duration as frame_duration

__all__ = [
    "DEFAULT_SPACING",
    "MAX_SECONDS",
    "IndexPoint",
    "TimeParser",
    "frame_duration",
    "parse_clock",
]
