from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from mmstream.config import CacheConfig
from mmstream.errors import InvalidStreamIdError, StorageError, StreamExistsError
from mmstream.streams import (
    StreamManager,
    StreamStatus,
    check_stream_id,
    is_valid_stream_id,
    open_stream_manager,
)

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


def _generated_hostile() -> list[str]:
    """Every byte-level way out of the alphabet: each ASCII character outside it alone, as a
    prefix, inside and at the end of an id; traversal spelled in the encodings a proxy or
    an HTTP library might decode; look-alikes; metadata names; sizes past the limit."""
    outside = [chr(c) for c in range(128) if not (chr(c).isascii() and
               (chr(c).isalnum() or chr(c) in "_-"))]  # fmt: skip
    ids = [c for c in outside] + [f"a{c}b" for c in outside] + [f"{c}x" for c in outside]
    ids += [f"x{c}" for c in outside]
    traversal = ["../", "..%2f", "..%2F", "%2e%2e/", "%2e%2e%2f", "%252e%252e%252f",
                 "..%5c", "%2e%2e%5c", "..%c0%af", "..%c1%9c", "%c0%ae%c0%ae/", "....//",
                 "..;/", ".%00./", "..\\", "..\\..\\", "/..", "\\..", "file:///etc/passwd",
                 "C:\\Windows", "\\\\server\\share", "~root", "$HOME", "`id`", "$(id)",
                 "a;rm -rf /", "a|b", "a&b", "a>b", "<script>", "'", '"', "a'--"]  # fmt: skip
    ids += [t + "etc/passwd" for t in traversal] + traversal
    lookalikes = ["\u2024", "\u2025", "\u2026", "\ufe52", "\uff0e", "\u3002", "\u2215",
                  "\u2044", "\uff0f", "\u29f8", "\uff3c", "\u2216", "\ufe68", "\u0430",
                  "\u0435", "\u200b", "\u200d", "\ufeff", "\u00a0", "\u2028", "\u0301",
                  "\U0001f600", "\ud800", "\x85", "\xa0", "\u0660", "\uff10", "\u00b2",
                  "\u212a", "\u017f"]  # fmt: skip
    ids += [f"a{c}b" for c in lookalikes] + [c * 2 for c in lookalikes]
    ids += [f"{n}.{ext}" for n in ("x", "a", "") for ext in ("data", "json", "json.tmp", "tmp")]
    ids += ["x" * n for n in (129, 130, 256, 1024, 4096, 65536)]
    ids += ["", " ", "  ", "\t", "\n", "\r\n", "a\rb"]
    return ids


HOSTILE += [h for h in _generated_hostile() if h not in HOSTILE]


@pytest.mark.parametrize("stream_id", VALID)
def test_valid_ids(stream_id: str) -> None:
    assert is_valid_stream_id(stream_id)
    assert check_stream_id(stream_id) == stream_id


@pytest.mark.parametrize("stream_id", HOSTILE, ids=lambda value: repr(value)[:40])
def test_hostile_ids_are_rejected(stream_id: object) -> None:
    assert not is_valid_stream_id(stream_id)
    with pytest.raises(InvalidStreamIdError) as info:
        check_stream_id(stream_id)
    assert info.value.code == "invalid-id"
    assert len(str(info.value)) < 200  # a 4 KiB id is not echoed whole into logs


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``root`` with its mode, size and (for files) sha256. Not mtimes:
    the mmap backend pre-faults a stream's next pages in a worker thread, which may touch
    the data file's mtime after the append returned, without changing a byte."""
    result = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        result[str(path.relative_to(root))] = (st.st_mode, st.st_size, digest)
    return result


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
        lambda: _hold(manager, sid),
    ]
    rejected = 0
    for call in calls:
        with pytest.raises(InvalidStreamIdError):
            await call()
        rejected += 1
    with pytest.raises(InvalidStreamIdError):
        manager.stat(sid)
    return rejected + 1


async def _hold(manager: StreamManager, sid: str) -> None:
    await trio.lowlevel.checkpoint()
    with manager.hold(sid):
        pass


async def test_hostile_ids_touch_no_file(
    tmp_path: Path, config: CacheConfig, figure: Callable[[str, str, str], None]
) -> None:
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
        assert rejected == 10 * len(HOSTILE)
        assert _snapshot(tmp_path) == before
        assert [info.stream_id for info in manager.list()] == ["existing"]
    figure(
        "6. Hostile ids",
        f"{config.backend} backend: {len(HOSTILE)} ids (traversal in 33 spellings, every ASCII "
        "character outside the alphabet, 30 Unicode look-alikes, NUL, 64 KiB, empty, "
        "metadata names, non-strings) at each of the manager's 10 entry points",
        f"{rejected}/{rejected} rejected with invalid-id; canary tree (sha256 of every file) "
        "unchanged",
    )


async def test_planted_symlinks_are_never_followed(
    tmp_path: Path, config: CacheConfig, figure: Callable[[str, str, str], None]
) -> None:
    """Someone with write access to the cache directory plants symlinks with stream names:
    start-up, create, read and delete never write, read or remove through them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "secret"
    target.write_bytes(b"not yours")
    directory = config.directory
    directory.mkdir(mode=0o700)
    planted = ["victim.json", "victim.data", "tmp.json.tmp", "tmp.data", "tmp.idx", "victim.idx"]
    for name in planted:
        os.symlink(target, directory / name)
    os.symlink(outside, directory / "dir.json")
    before = _snapshot(outside)
    async with open_stream_manager(config) as manager:
        # Recovery: the sidecar link is refused (ELOOP), the stream quarantined, not read.
        assert manager.stat("victim").status is StreamStatus.ERROR
        with pytest.raises(StorageError):
            await manager.read("victim", 0, 100)
        # A create over a data link planted now fails (O_EXCL|O_NOFOLLOW), writing nothing.
        os.symlink(target, directory / "fresh.data")
        with pytest.raises(StreamExistsError):
            await manager.create("fresh")
        await manager.create("tmp")  # its data link was removed at start (no sidecar)
        await manager.append("tmp", b"mine")
        await manager.finalize("tmp")
        await manager.delete("victim")  # removes the links themselves
        await manager.delete("dir")
    assert _snapshot(outside) == before
    assert target.read_bytes() == b"not yours"
    left = sorted(os.listdir(directory))
    assert left == ["fresh.data", "tmp.data", "tmp.json"]
    assert stat.S_ISLNK(os.lstat(directory / "fresh.data").st_mode)  # untouched
    figure(
        "6. Hostile ids",
        f"{config.backend} backend: symlinks planted in the cache directory under stream "
        "file names (sidecar, data, temporary sidecar, a directory link), then start, "
        "create, read, finalize, delete",
        "0 followed: outside tree unchanged (sha256), linked streams quarantined or refused",
    )
