"""Stream ids: the one place that decides which names may become file names.

An id is 1 to 128 characters from ``A-Z a-z 0-9 _ -`` (ASCII only). That alphabet has no
dot, slash, backslash, NUL, percent sign or non-ASCII look-alike, so an id can never name a
path outside the cache directory, a hidden file, or one of the manager's own files
(``<id>.data``, ``<id>.json``, ``<id>.json.tmp``). Every public entry point of the manager
checks the id with :func:`check_stream_id` before any file is touched.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from ..errors import InvalidStreamIdError

__all__ = ["STREAM_ID_ALPHABET", "STREAM_ID_MAX_LENGTH", "check_stream_id", "is_valid_stream_id"]

STREAM_ID_MAX_LENGTH = 128
STREAM_ID_ALPHABET = "A-Z a-z 0-9 _ -"
# An explicit ASCII class (never \w, which matches Unicode letters and digits); fullmatch,
# so a trailing newline is not accepted the way "$" would.
_STREAM_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{STREAM_ID_MAX_LENGTH}}}")


def is_valid_stream_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _STREAM_ID.fullmatch(value) is not None


def check_stream_id(value: object) -> str:
    """Return ``value`` if it is a valid stream id, else raise :class:`InvalidStreamIdError`."""
    if is_valid_stream_id(value):
        return value
    if not isinstance(value, str):
        raise InvalidStreamIdError(f"a stream id must be a string, got {type(value).__name__}")
    # Echo a bounded, escaped prefix only: ids come from the network and end up in logs.
    shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
    if not value:
        reason = "it is empty"
    elif len(value) > STREAM_ID_MAX_LENGTH:
        reason = f"it is {len(value)} characters long"
    else:
        reason = "it has a character outside the alphabet"
    raise InvalidStreamIdError(
        f"invalid stream id {shown}: {reason}; use 1-{STREAM_ID_MAX_LENGTH} characters "
        f"from {STREAM_ID_ALPHABET}"
    )
