from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mmstream.config import CacheConfig
from mmstream.errors import InvalidStreamIdError
from mmstream.streams import StreamManager, check_stream_id, is_valid_stream_id, open_stream_manager

VALID = ["a", "Z", "0", "_", "-", "-rf", "Stream_01-b", "x" * 128]

HOSTILE: list[object] = [
    "",
    ".",
    "..",
    "../x",
    "..\\",
    "..\\x",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "%2e%2e%2f",
    "%00",
    "a\x00b",
    "\x00",
    "\uff0e\uff0e",  # fullwidth full stop
    "\uff0f",  # fullwidth solidus
    "\u2215",  # division slash
    "\uff41",  # fullwidth a
    "\u0661",  # arabic-indic digit one: \d would accept it
    "caf\u00e9",
    "x" * 129,
    "x" * 4096,
    "x.json",
    "x.data",
    "x.json.tmp",
    ".hidden",
    "a b",
    "a\n",
    "a\t",
    "*",
    "~",
    None,
    b"abc",
    1,
    ["a"],
]


@pytest.mark.parametrize("stream_id", VALID)
def test_valid_ids(stream_id: str) -> None:
    assert is_valid_stream_id(stream_id)
    assert check_stream_id(stream_id) == stream_id


@pytest.mark.parametrize("stream_id", HOSTILE, ids=repr)
def test_hostile_ids_are_rejected(stream_id: object) -> None:
    assert not is_valid_stream_id(stream_id)
    with pytest.raises(InvalidStreamIdError) as info:
        check_stream_id(stream_id)
    assert info.value.code == "invalid-id"
    assert len(str(info.value)) < 200  # a 4 KiB id is not echoed whole into logs


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path with its size and content. Not mtimes: the mmap backend pre-faults a
    stream's next pages in a worker thread, which may touch the data file's mtime after
    the append returned, without changing a byte."""
    return {
        str(p.relative_to(root)): (
            p.lstat().st_size,
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
        )
        for p in sorted(root.rglob("*"))
    }


async def _every_entry_point(manager: StreamManager, stream_id: object) -> int:
    """Call every operation that takes an id; count the InvalidStreamIdErrors."""
    sid: str = stream_id  # type: ignore[assignment]  # deliberately wrong types too
    calls = [
        lambda: manager.create(sid),
        lambda: manager.append(sid, b"x"),
        lambda: manager.append(sid, b"x", expected_offset=0),
        lambda: manager.read(sid, 0, 1),
        lambda: manager.wait_for_data(sid, 0),
        lambda: manager.flush(sid),
        lambda: manager.finalize(sid),
        lambda: manager.delete(sid),
    ]
    rejected = 0
    for call in calls:
        with pytest.raises(InvalidStreamIdError):
            await call()
        rejected += 1
    with pytest.raises(InvalidStreamIdError):
        manager.stat(sid)
    return rejected + 1


async def test_hostile_ids_touch_no_file(tmp_path: Path, config: CacheConfig) -> None:
    # A canary tree around the cache directory: nothing in it may change.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0\n")
    async with open_stream_manager(config) as manager:
        await manager.create("existing")
        await manager.append("existing", b"data")
        before = _snapshot(tmp_path)
        rejected = 0
        for stream_id in HOSTILE:
            rejected += await _every_entry_point(manager, stream_id)
        assert rejected == 9 * len(HOSTILE)
        assert _snapshot(tmp_path) == before
        assert [info.stream_id for info in manager.list()] == ["existing"]
