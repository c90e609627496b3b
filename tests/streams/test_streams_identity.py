"""Each stream has its own generation: a stream id deleted and created again names another
stream, and the manager refuses to hand out a piece of it to a reader of the first one
(issue 14, item 1). The generation is kept in the sidecar (version 2) and a version 1
sidecar, which has none, gets a stable one at recovery."""

from __future__ import annotations

import json
import re

import pytest
import trio
import trio.testing

from mmstream.config import CacheConfig
from mmstream.errors import StreamChangedError, StreamNotFoundError
from mmstream.protocol import WIRE_ERRORS
from mmstream.streams import StreamManager, StreamStatus, open_stream_manager
from mmstream.streams._context import legacy_generation
from mmstream.streams._sidecar import (
    SIDECAR_VERSION,
    SidecarError,
    SidecarRecord,
    read_sidecar,
)

GENERATION = re.compile(r"[0-9a-f]{16}")


async def _replace(manager: StreamManager, sid: str, data: bytes) -> str:
    """Delete ``sid`` and create it again holding ``data``; the new generation."""
    await manager.delete(sid)
    info = await manager.create(sid)
    await manager.append(sid, data)
    return info.generation


def test_stream_changed_is_a_not_found_with_its_own_wire_code() -> None:
    exc = StreamChangedError("stream s was deleted")
    assert isinstance(exc, StreamNotFoundError) and isinstance(exc, KeyError)
    assert exc.code == "stream-changed"
    assert WIRE_ERRORS["stream-changed"] is StreamChangedError


async def test_every_stream_of_an_id_has_its_own_generation(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        seen = set()
        for _ in range(5):
            info = await manager.create("s")
            assert GENERATION.fullmatch(info.generation)
            assert manager.stat("s").generation == info.generation
            assert [i.generation for i in manager.list()] == [info.generation]
            seen.add(info.generation)
            await manager.delete("s")
        assert len(seen) == 5


async def test_reads_of_a_replaced_stream_are_refused(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        old = (await manager.create("s")).generation
        await manager.append("s", b"old bytes")
        assert await manager.read("s", 0, 3, generation=old) == b"old"
        assert await manager.read_shared("s", 0, 3, generation=old) == b"old"
        assert (await manager.wait_for_data("s", 0, generation=old)).generation == old
        new = await _replace(manager, "s", b"new bytes")
        assert new != old
        for attempt in (
            lambda: manager.read("s", 3, 6, generation=old),
            lambda: manager.read_shared("s", 3, 6, generation=old),
            lambda: manager.wait_for_data("s", 3, generation=old),
        ):
            with pytest.raises(StreamChangedError, match=f"generation {old}"):
                await attempt()
        with pytest.raises(StreamChangedError):
            manager.stat("s", generation=old)
        with pytest.raises(StreamChangedError), manager.hold("s", generation=old):
            pass  # pragma: no cover
        # The current generation, or none, reads the stream the id names now.
        assert await manager.read("s", 0, 3, generation=new) == b"new"
        assert await manager.read("s", 0, 3) == b"new"
        with manager.hold("s", generation=new) as held:
            assert held.generation == new
        # Deleted and not created again: not found, as before.
        await manager.delete("s")
        with pytest.raises(StreamNotFoundError) as caught:
            await manager.read("s", 0, 3, generation=new)
        assert type(caught.value) is StreamNotFoundError


async def test_a_hold_does_not_carry_over_to_the_next_stream(config: CacheConfig) -> None:
    """An HTTP body or a WebSocket ``read`` holds the stream and reads it in pieces with
    the held generation: after a delete and a create, the next piece is refused."""
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"a" * 1000)
        with manager.hold("s") as held:
            assert await manager.read("s", 0, 10, generation=held.generation) == b"a" * 10
            await _replace(manager, "s", b"b" * 1000)
            with pytest.raises(StreamChangedError):
                await manager.read("s", 10, 10, generation=held.generation)


async def test_shared_reads_are_never_shared_across_generations(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"aaaa")
        first = await manager.read_shared("s", 0, 4)
        assert first == b"aaaa"
        assert await manager.read_shared("s", 0, 4) is first  # shared at the same size
        new = await _replace(manager, "s", b"bbbb")  # the same size, the same range
        assert await manager.read_shared("s", 0, 4, generation=new) == b"bbbb"
        assert await manager.read_shared("s", 0, 4) == b"bbbb"


async def test_a_follower_of_a_replaced_stream_is_woken_and_refused(
    config: CacheConfig,
) -> None:
    async with open_stream_manager(config) as manager:
        old = (await manager.create("s")).generation
        raised: list[Exception] = []

        async def follow() -> None:
            try:
                await manager.wait_for_data("s", 0, generation=old)
            except StreamNotFoundError as exc:
                raised.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            await _replace(manager, "s", b"new")
        assert len(raised) == 1  # woken by the delete, not fed the new stream's bytes
        # Too late to be woken: refused at once.
        with pytest.raises(StreamChangedError):
            await manager.wait_for_data("s", 0, generation=old)


async def test_the_generation_survives_a_restart(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        ready = (await manager.create("ready")).generation
        await manager.append("ready", b"done")
        await manager.finalize("ready")
        live = (await manager.create("live")).generation
        await manager.append("live", b"going")
        await manager.flush("live")
    async with open_stream_manager(config) as manager:
        assert manager.stat("ready").generation == ready
        assert manager.stat("live").generation == live
        assert await manager.read("live", 0, 5, generation=live) == b"going"
    record = read_sidecar(config.directory / "ready.json")
    assert record.generation == ready
    assert SidecarRecord.decode(record.encode()) == record
    assert json.loads(record.encode())["version"] == SIDECAR_VERSION == 2


def _as_version_1(path: object) -> dict[str, object]:
    """Rewrite a sidecar as the previous release wrote it: version 1, no generation."""
    with open(path, "rb") as file:  # type: ignore[call-overload]
        record = json.load(file)
    del record["generation"]
    record["version"] = 1
    with open(path, "w") as file:  # type: ignore[call-overload]
        json.dump(record, file)
    return record  # type: ignore[no-any-return]


async def test_version_1_sidecars_are_recovered_with_a_stable_generation(
    config: CacheConfig,
) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("old")
        await manager.append("old", b"recorded before generations")
        await manager.finalize("old")
        await manager.create("upload")
        await manager.append("upload", b"half")
        await manager.flush("upload")
    old = _as_version_1(config.directory / "old.json")
    _as_version_1(config.directory / "upload.json")
    derived = legacy_generation("old", old["created_at"])
    assert GENERATION.fullmatch(derived)
    for _ in range(2):  # the same at every start: a stable ETag
        async with open_stream_manager(config) as manager:
            info = manager.stat("old")
            assert info.status is StreamStatus.READY
            assert info.generation == derived
            assert await manager.read("old", 0, 8, generation=derived) == b"recorded"
            upload = manager.stat("upload")
            assert upload.status is StreamStatus.UPLOADING and upload.size == 4
    # The next record is written in the current version, with the generation it was given.
    async with open_stream_manager(config) as manager:
        generation = manager.stat("upload").generation
        await manager.append("upload", b" more")
        await manager.finalize("upload")
    raw = json.loads((config.directory / "upload.json").read_bytes())
    assert raw["version"] == SIDECAR_VERSION and raw["generation"] == generation


def test_legacy_generations_differ_between_streams_of_one_id() -> None:
    first = legacy_generation("s", 1764374460.125)
    assert first == legacy_generation("s", 1764374460.125)
    assert first != legacy_generation("s", 1764374460.126)
    assert first != legacy_generation("t", 1764374460.125)


@pytest.mark.parametrize(
    "change",
    [
        {"version": 1},  # a version 1 sidecar has no generation field
        {"generation": "0123456789ABCDEF"},
        {"generation": "0123"},
        {"generation": None},
        {"version": SIDECAR_VERSION + 1},
    ],
)
def test_sidecars_with_a_bad_generation_or_version_are_refused(
    change: dict[str, object],
) -> None:
    record = SidecarRecord(
        stream_id="s",
        status=StreamStatus.READY,
        content_type="audio/ogg",
        metadata={},
        durable_offset=0,
        created_at=1.0,
        last_accessed_at=1.0,
        finalized_at=None,
        sha256=None,
        error=None,
        generation="0123456789abcdef",
    )
    raw = json.loads(record.encode())
    raw.update(change)
    with pytest.raises(SidecarError):
        SidecarRecord.decode(json.dumps(raw).encode())


async def test_a_quarantined_stream_keeps_one_generation(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("bad")
    (config.directory / "bad.json").write_text("{not json")
    generations = set()
    for _ in range(2):
        async with open_stream_manager(config) as manager:
            info = manager.stat("bad")
            assert info.status is StreamStatus.ERROR
            generations.add(info.generation)
    assert len(generations) == 1 and GENERATION.fullmatch(generations.pop())
