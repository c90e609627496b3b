"""A stream past 2 GiB through the default (1 GiB) segments, read back byte-identical.

The checks avoid building gigabytes of expected bytes: fresh anonymous memory costs about
1 s per GiB of page faults on a small VM, more than the cache's own work.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from mmstream_mmap import MmapCache

from mmstream.cache import GiB, MiB
from mmstream.testing import pattern

TOTAL = 2 * GiB + 3 * MiB
CHUNK = MiB + 4099  # odd, so writes straddle both segment boundaries
COUNT = -(-TOTAL // CHUNK)
_BODY = pattern(CHUNK)
_TAIL = _BODY[8:]


def _chunk(index: int) -> bytes:
    """A numbered header and a random body: a shift by any amount, or a chunk written
    at another chunk's place, shows as a mismatch."""
    return (struct.pack("<Q", index) + _TAIL)[: min(CHUNK, TOTAL - index * CHUNK)]


def _matches(got: bytes, start: int) -> bool:
    """``got`` is exactly the stream's bytes at ``start``."""
    stop = start + len(got)
    for index in range(start // CHUNK, -(-stop // CHUNK)):
        base = index * CHUNK
        at = max(base, start) - start  # where this chunk's part begins inside ``got``
        whole = base >= start and base + CHUNK <= stop
        if whole:  # compare in place, without copying a MiB
            if not (got.startswith(struct.pack("<Q", index), at) and got.startswith(_TAIL, at + 8)):
                return False
        else:
            part = _chunk(index)[max(start - base, 0) : stop - base]
            if not got.startswith(part, at):
                return False
    return True


@pytest.mark.slow
def test_a_stream_past_2_gib_reads_back_byte_identical(tmp_path: Path) -> None:
    if shutil.disk_usage(tmp_path).free < TOTAL + GiB:
        pytest.skip("needs about 3 GiB of free disk")
    path = tmp_path / "big.data"
    cache = MmapCache(path)  # default options: 1 GiB segments, 64 MiB initial, prefault
    try:
        cache.create(64 * MiB)
        buffer = bytearray(_BODY)
        for index in range(COUNT):
            buffer[:8] = struct.pack("<Q", index)
            cache.write(index * CHUNK, memoryview(buffer)[: min(CHUNK, TOTAL - index * CHUNK)])
        assert cache.data_end == TOTAL
        cache.finalize(TOTAL)
        assert path.stat().st_size == cache.size == TOTAL
        for index in range(COUNT):
            got = cache.read(index * CHUNK, CHUNK)
            assert len(got) == min(CHUNK, TOTAL - index * CHUNK)
            assert _matches(got, index * CHUNK), f"chunk {index}"
        spans = [
            (GiB - 5, 10),
            (GiB - MiB // 2, 3 * MiB),
            (2 * GiB - 3, 3 * MiB + 3),  # through the 2 GiB mark to the very end
            (2 * GiB - 2 * CHUNK - 1, 5 * CHUNK),
        ]
        for start, length in spans:
            assert _matches(cache.read(start, length), start), (start, length)
        cache.close()
        again = MmapCache(path)
        again.open()
        try:
            assert again.data_end == TOTAL
            assert _matches(again.read(GiB - 10, 20), GiB - 10)
            assert _matches(again.read(2 * GiB - 10, 20), 2 * GiB - 10)
            assert again.read(TOTAL - 100, 1000) == _chunk(COUNT - 1)[-100:]
        finally:
            again.close()
    finally:
        cache.close()
        path.unlink(missing_ok=True)


def test_the_checker_sees_a_wrong_byte() -> None:
    start = CHUNK - 3
    good = _chunk(0)[-3:] + _chunk(1) + _chunk(2)[:5]
    assert _matches(good, start)
    assert not _matches(good[:100] + bytes([good[100] ^ 1]) + good[101:], start)
    assert not _matches(good[1:], start)
