"""Times as people write them: ``90``, ``-12.5``, ``1:30``, ``1:02:03.5`` (shared by the
HTTP ``?t=`` and the CLI's ``--from``/``--to``; nothing here imports the server)."""

from __future__ import annotations

import math
import re

__all__ = ["MAX_SECONDS", "parse_clock"]

#: Larger times are refused: no stream lasts three centuries.
MAX_SECONDS = 1e10
_CLOCK = re.compile(r"(-?)(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_clock(value: str) -> float:
    """``90``, ``-12.5``, ``1:30`` or ``1:02:03.5`` as seconds; :class:`ValueError` else."""
    if _NUMBER.fullmatch(value):
        seconds = float(value)
    elif match := _CLOCK.fullmatch(value):
        sign, hours, minutes, secs = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
        seconds = -seconds if sign else seconds
    else:
        raise ValueError(f"not a time: {value[:40]!r} (seconds, or [h:]m:s)")
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise ValueError(f"time out of range: {value[:40]!r}")
    return seconds
