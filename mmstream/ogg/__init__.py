"""Ogg (RFC 3533) without I/O: its pages, read incrementally and written, and titles as
chained logical streams.

Pure, incremental code (bytes in, in pieces of any size; results out), tested without a
server: the sync parser (:mod:`mmstream.audio_sync`) and the time parser
(:mod:`mmstream.media`) read Ogg through :class:`OggPages`.
"""

from __future__ import annotations

from ._chain import MAX_TITLE_BYTES as MAX_TITLE_BYTES
from ._chain import OggChainer as OggChainer
from ._chain import comment_packet as comment_packet
from ._chain import comment_title as comment_title
from ._pages import BOS as BOS
from ._pages import CONTINUED as CONTINUED
from ._pages import EOS as EOS
from ._pages import OggPage as OggPage
from ._pages import OggPages as OggPages
from ._write import crc as crc
from ._write import packets as packets
from ._write import patch_head as patch_head
from ._write import write_pages as write_pages

__all__ = [
    "BOS",
    "CONTINUED",
    "EOS",
    "MAX_TITLE_BYTES",
    "OggChainer",
    "OggPage",
    "OggPages",
    "comment_packet",
    "comment_title",
    "crc",
    "packets",
    "patch_head",
    "write_pages",
]
