"""MPEG audio (layers I, II, III) and AAC in ADTS without I/O: their frames, read
incrementally.

Pure, incremental code (bytes in, in pieces of any size; results out), tested without a
server: the sync parser (:mod:`mmstream.audio_sync`) and the time parser
(:mod:`mmstream.media`) read MP3 and AAC through :class:`AudioFrames`, as they read Ogg
through :class:`mmstream.ogg.OggPages`.
"""

from __future__ import annotations

from ._frames import AudioFrame as AudioFrame
from ._frames import AudioFrames as AudioFrames
from ._frames import frame_duration as frame_duration
from ._frames import frame_length as frame_length

__all__ = ["AudioFrame", "AudioFrames", "frame_duration", "frame_length"]
