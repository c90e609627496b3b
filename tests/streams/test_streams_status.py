from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio

import mmstream.streams
from mmstream.errors import NotUploadingError, StorageError
from mmstream.streams import TRANSITIONS, StreamContext, StreamStatus


def _context(status: StreamStatus) -> StreamContext:
    return StreamContext(
        stream_id="s",
        data_path=Path("s.data"),
        sidecar_path=Path("s.json"),
        cache=None,
        status=status,
        created_at=0.0,
        last_accessed_at=0.0,
    )


def test_the_table_is_the_spec() -> None:
    legal = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert legal == {
        (StreamStatus.UPLOADING, StreamStatus.READY),
        (StreamStatus.UPLOADING, StreamStatus.ERROR),
        (StreamStatus.READY, StreamStatus.ERROR),
        (StreamStatus.ERROR, StreamStatus.ERROR),
    }


@pytest.mark.parametrize(("old", "new"), list(itertools.product(StreamStatus, StreamStatus)))
def test_set_status_follows_the_table(old: StreamStatus, new: StreamStatus) -> None:
    ctx = _context(old)
    if new in TRANSITIONS[old]:
        ctx.set_status(new, error="disk on fire")
        assert ctx.status is new
    else:
        with pytest.raises(NotUploadingError):
            ctx.set_status(new)
        assert ctx.status is old


def test_error_keeps_the_first_reason() -> None:
    ctx = _context(StreamStatus.UPLOADING)
    ctx.set_status(StreamStatus.ERROR, error="first")
    ctx.set_status(StreamStatus.ERROR, error="second")
    assert ctx.error == "first"


def test_what_each_status_allows() -> None:
    assert [s for s in StreamStatus if s.writable] == [StreamStatus.UPLOADING]
    assert [s for s in StreamStatus if s.readable] == [StreamStatus.UPLOADING, StreamStatus.READY]
    with pytest.raises(NotUploadingError, match="ready"):
        _context(StreamStatus.READY).require_writable()
    with pytest.raises(StorageError, match="quarantined"):
        _context(StreamStatus.ERROR).require_readable()


async def test_status_change_wakes_waiters() -> None:
    ctx = _context(StreamStatus.UPLOADING)
    event = ctx.changed
    ctx.set_status(StreamStatus.READY)
    with trio.fail_after(1):
        await event.wait()
    assert ctx.changed is not event


def test_public_surface() -> None:
    assert set(mmstream.streams.__all__) == {
        "DEFAULT_CONTENT_TYPE",
        "MAX_TITLE_LENGTH",
        "STREAM_ID_ALPHABET",
        "STREAM_ID_MAX_LENGTH",
        "TRANSITIONS",
        "StreamContext",
        "StreamInfo",
        "StreamManager",
        "StreamStatus",
        "StreamTier",
        "Title",
        "WriterLease",
        "check_stream_id",
        "is_generation",
        "is_valid_stream_id",
        "open_stream_manager",
    }
    for name in mmstream.streams.__all__:
        value = getattr(mmstream.streams, name)
        if callable(value):
            assert value.__module__.startswith("mmstream.streams._"), name
