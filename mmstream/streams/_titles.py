"""A live stream's titles (Icecast's ``song``): the current one and where each began.

Kept beside the sidecar as ``<id>.titles``, a small JSON record rewritten atomically on
each change, so the sidecar's format (and the other records that commit with it) stays as
it is: a title is a radio's annotation of the bytes, not part of their commit. A stream
without titles has no file. The newest :data:`MAX_TITLES` are kept.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import attrs

from ._context import MAX_TITLE_LENGTH, Title
from ._sidecar import read_limited, write_atomically

__all__ = [
    "MAX_TITLES",
    "TITLES_SUFFIX",
    "read_titles",
    "remove_titles",
    "titles_path",
    "write_titles",
]

log = logging.getLogger("mmstream.streams")

TITLES_SUFFIX = ".titles"
#: Titles kept per stream (a song every 3 minutes: 5 hours of history).
MAX_TITLES = 100
_MAX_BYTES = 2 * MAX_TITLES * (MAX_TITLE_LENGTH * 6 + 100)


def titles_path(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name.removesuffix(".json") + TITLES_SUFFIX)


def write_titles(path: Path, generation: str, titles: tuple[Title, ...]) -> None:
    """Blocking: run it in a worker thread."""
    record = {"generation": generation, "titles": [attrs.asdict(t) for t in titles]}
    write_atomically(path, json.dumps(record, ensure_ascii=False).encode() + b"\n")


def read_titles(path: Path, generation: str) -> tuple[Title, ...]:
    """The titles recorded at ``path`` for the stream's ``generation``; none if missing or
    another incarnation's (a deleted namesake's whose removal failed). A damaged record
    loses the titles (logged), never the stream."""
    try:
        raw = read_limited(path, _MAX_BYTES)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        log.warning("%s: titles unreadable (%s); starting without", path, exc.strerror)
        return ()
    try:
        if len(raw) > _MAX_BYTES:
            raise ValueError("too large")
        record = json.loads(raw)
        if not isinstance(record, dict) or not isinstance(record.get("titles"), list):
            raise ValueError("not a titles record")
        if record.get("generation") != generation:
            log.warning("%s: titles of another incarnation of the stream; ignored", path)
            return ()
        return tuple(Title(**item) for item in record["titles"][-MAX_TITLES:])
    except (ValueError, TypeError, RecursionError) as exc:
        log.warning("%s: titles malformed (%s); starting without", path, exc)
        return ()


def remove_titles(path: Path) -> None:
    """Forget a deleted stream's titles, or a stale record before a new stream's (blocking)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: could not remove old titles: %s", path, exc.strerror)
