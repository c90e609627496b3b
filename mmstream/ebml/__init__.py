"""EBML (Matroska, WebM) without I/O: its elements, read incrementally.

Pure, incremental code (bytes in, in pieces of any size; results out), tested without a
server: the sync parser (:mod:`mmstream.audio_sync`), the time parser and the Opus packet
reader (:mod:`mmstream.media`) read WebM and Matroska through :class:`EbmlElements`, as
they read Ogg through :class:`mmstream.ogg.OggPages`.
"""

from __future__ import annotations

from ._elements import EbmlElement as EbmlElement
from ._elements import EbmlElements as EbmlElements
from ._elements import ElementId as ElementId
from ._elements import vint as vint

__all__ = ["EbmlElement", "EbmlElements", "ElementId", "vint"]
