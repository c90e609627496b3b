"""The journal ``mmstream.journal``: one metadata commit for many streams.

A sidecar write costs two fsyncs (the file and its directory). Recording each durable
offset in its own sidecar made a durability round with 1,000 live uploads 3,000 fsyncs, and
a burst of finalizes one sidecar commit each. The journal holds, for every stream whose
sidecar lags behind its committed state, that state (status, durable offset, and for a
finalized stream its sha256 and time): a group commit flushes the data of all the streams it
carries (one trip to a worker thread), then writes the journal once (a temporary file,
fsync, rename, directory fsync), so a round or a burst of finalizes is one metadata commit.

Recovery reads the journal and applies an entry over the stream's sidecar when both belong
to the same stream (same ``generation``: a stream deleted and created again under the same
id is another stream). An entry is written only after the data it declares durable was
flushed, so recovery is never ahead of the data. A finalized stream's sidecar is rewritten
later, off the finalize path (batched, one directory sync), after which it drops out of the
journal; an upload stays in it until it is finalized or deleted. Recovery reads at most
:data:`MAX_JOURNAL_BYTES`, so a commit whose journal would hold more than
:func:`journal_capacity` entries first brings the lagging sidecars up to date (one batch)
and drops their entries: the journal is never written in a form recovery refuses.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import attrs
from attrs import validators as v

from ..cache import MAX_FILE_SIZE, fsync_directory, os_errors
from ..errors import StorageError
from ._context import StreamContext, StreamStatus
from ._ids import STREAM_ID_MAX_LENGTH
from ._sidecar import _generation, _offset, _opt_float, _opt_str, write_atomically

__all__ = [
    "JOURNAL_NAME",
    "JournalEntry",
    "committed_state",
    "entry_of",
    "journal_capacity",
    "read_journal",
    "remove_journal",
    "write_journal",
]

log = logging.getLogger("mmstream.streams")

#: Not a stream file name: recovery knows it (and its ``.tmp``) by name.
JOURNAL_NAME = "mmstream.journal"
JOURNAL_FORMAT = "mmstream-journal"
JOURNAL_VERSION = 1
#: What recovery reads; the writer keeps below it (see :func:`journal_capacity`).
MAX_JOURNAL_BYTES = 100_000 * 256
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@attrs.frozen
class JournalEntry:
    """A stream's committed state where its sidecar may lag, as recovery reads it."""

    generation: str = attrs.field(validator=_generation)
    status: StreamStatus = attrs.field(
        validator=v.in_((StreamStatus.UPLOADING, StreamStatus.READY))
    )
    durable_offset: int = attrs.field(validator=_offset)
    sha256: str | None = attrs.field(default=None, validator=_opt_str)
    finalized_at: float | None = attrs.field(default=None, validator=_opt_float)


def committed_state(
    ctx: StreamContext, ready: tuple[str, float] | None = None
) -> tuple[StreamStatus, str | None, float | None]:
    """``ctx``'s committed status, sha256 and finalize time; with ``ready`` (sha256, time),
    those a finalize commits."""
    if ready is None:
        return ctx.committed_status, ctx.sha256, ctx.finalized_at
    return StreamStatus.READY, *ready


def entry_of(
    ctx: StreamContext, *, durable_offset: int | None = None, ready: tuple[str, float] | None = None
) -> dict[str, object]:
    """``ctx``'s committed state as a journal entry (JSON-ready, unvalidated: built on the
    event loop for every lagging stream at every commit, so it must be cheap); with
    ``durable_offset``, the state a flush to there commits; with ``ready`` (sha256, time),
    the state a finalize commits."""
    status, sha256, finalized_at = committed_state(ctx, ready)
    return {
        "generation": ctx.generation,
        "status": status.value,
        "durable_offset": ctx.durable_offset if durable_offset is None else durable_offset,
        "sha256": sha256,
        "finalized_at": finalized_at,
    }


def _encode(entries: Mapping[str, Mapping[str, object]]) -> bytes:
    payload = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "streams": entries}
    return json.dumps(payload).encode() + b"\n"


#: The largest entry there can be (longest id, largest values) and the journal around none.
_ENTRY_BYTES = len(
    _encode(
        {
            "x" * STREAM_ID_MAX_LENGTH: {
                "generation": "0" * 16,
                "status": StreamStatus.UPLOADING.value,
                "durable_offset": MAX_FILE_SIZE,
                "sha256": "0" * 64,
                "finalized_at": -1.7976931348623157e308,
            },
            "y": {},
        }
    )
) - len(_encode({"y": {}}))
_EMPTY_BYTES = len(_encode({}))


def journal_capacity() -> int:
    """How many entries a journal may hold and still be read by recovery."""
    return (MAX_JOURNAL_BYTES - _EMPTY_BYTES) // _ENTRY_BYTES


def write_journal(directory: Path, entries: Mapping[str, Mapping[str, object]]) -> None:
    """Replace the journal with ``entries`` (from :func:`entry_of`; blocking: call it in
    a worker thread); one recovery would refuse is not written."""
    raw = _encode(entries)
    if len(raw) > MAX_JOURNAL_BYTES:
        raise StorageError(f"the journal would exceed {MAX_JOURNAL_BYTES} bytes")
    write_atomically(directory / JOURNAL_NAME, raw)


def remove_journal(directory: Path) -> None:
    """Remove the journal once every sidecar is current (a clean shutdown; blocking)."""
    path = directory / JOURNAL_NAME
    with os_errors("removing", path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
    fsync_directory(path)


def read_journal(directory: Path) -> dict[str, JournalEntry]:
    """The journal's entries; none if there is no journal. One that cannot be trusted is
    logged and ignored: the sidecars alone are then what recovery has (blocking)."""
    path = directory / JOURNAL_NAME
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.error("cannot read %s: %s; using the sidecars alone", path, exc.strerror)
        return {}
    try:
        raw = os.read(fd, MAX_JOURNAL_BYTES + 1)
        while len(raw) <= MAX_JOURNAL_BYTES and (more := os.read(fd, MAX_JOURNAL_BYTES)):
            raw += more
    finally:
        os.close(fd)
    try:
        return _decode(raw)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        log.error("%s is malformed (%s); using the sidecars alone", path, exc)
        return {}


def _decode(raw: bytes) -> dict[str, JournalEntry]:
    if len(raw) > MAX_JOURNAL_BYTES:
        raise ValueError(f"larger than {MAX_JOURNAL_BYTES} bytes")
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
        raise ValueError("not an mmstream journal")
    if data.get("version") != JOURNAL_VERSION:
        raise ValueError(f"version {data.get('version')!r} is not {JOURNAL_VERSION}")
    streams = data["streams"]
    if not isinstance(streams, dict):
        raise ValueError("streams is not an object")
    entries = {}
    for sid, item in streams.items():
        if not isinstance(item, dict):
            raise ValueError(f"entry {sid!r} is not an object")
        fields = dict(item)
        fields["status"] = StreamStatus(fields["status"])
        entries[str(sid)] = JournalEntry(**fields)
    return entries
