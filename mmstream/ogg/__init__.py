"""Ogg (RFC 3533) without I/O: its pages, read incrementally.

Pure, incremental code (bytes in, in pieces of any size; results out), tested without a
server: the sync parser (:mod:`mmstream.audio_sync`) and the time parser
(:mod:`mmstream.media`) read Ogg through :class:`OggPages`.
"""

from __future__ import annotations

from ._pages import BOS as BOS
from ._pages import CONTINUED as CONTINUED
from ._pages import EOS as EOS
from ._pages import OggPage as OggPage
from ._pages import OggPages as OggPages

__all__ = ["BOS", "CONTINUED", "EOS", "OggPage", "OggPages"]
