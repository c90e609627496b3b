"""The backend conformance suite, modelled on fsspec's abstract test classes.

A backend's tests subclass :class:`CacheConformance` and provide one fixture, ``make_cache``,
returning the factory under test (usually the backend class)::

    import pytest
    from mmstream.testing import CacheConformance
    from my_backend import MyCache

    class TestMyCache(CacheConformance):
        @pytest.fixture
        def make_cache(self):
            return MyCache

Every test works on real files under ``tmp_path``. The suite passes its own
:class:`~mmstream.cache.CacheOptions` (fixture ``options``): a segment size of two mmap
allocation units, so spans across segment boundaries are cheap to exercise, and a batch limit
of 8. A subclass may override ``options`` but must keep ``segment_size`` small enough for the
files the tests write (a few segments of ``SEGMENT`` bytes).

Decisions the suite pins down, beyond the Protocol's docstring:

- Bytes below ``data_end`` that were never written (a gap left by a write past the end) read
  as zeros: ``data_end`` is a high-water mark, and reserved space reads as zeros.
- An empty write validates its offset and changes nothing (``data_end`` stays).
- ``prefetch``/``evict`` check their range like ``read`` does (an offset past ``data_end``
  is :class:`~mmstream.errors.OutOfRangeError`) and never change the bytes.
- After ``finalize`` the cache stays open: ``size == data_end == final_size``, the file on
  disk has exactly that length, and reads keep working.
"""

from __future__ import annotations

import array
import errno
import functools
import mmap
import os
import random
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mmstream.cache import CacheFactory, CacheOptions, MemoryMappedCache
from mmstream.errors import (
    BatchLimitError,
    CacheClosedError,
    InvalidArgumentError,
    NoSpaceError,
    OutOfRangeError,
    StorageError,
)

__all__ = ["SEGMENT", "CacheConformance", "pattern"]

#: The segment size the suite runs with: small, so spans across segments are cheap.
SEGMENT = 2 * mmap.ALLOCATIONGRANULARITY
INITIAL = 3000  # deliberately not a multiple of the page size
BATCH_LIMIT = 8


def pattern(length: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ at every offset, so a misplaced copy shows."""
    return random.Random(seed).randbytes(length)


#: One call of every method that must raise CacheClosedError on a closed cache.
_CALLS_AFTER_CLOSE: dict[str, Callable[[MemoryMappedCache], object]] = {
    "write": lambda cache: cache.write(0, b"x"),
    "read": lambda cache: cache.read(0, 1),
    "resize": lambda cache: cache.resize(2 * INITIAL),
    "flush": lambda cache: cache.flush(),
    "finalize": lambda cache: cache.finalize(0),
    "write_batch": lambda cache: cache.write_batch([(0, b"x")]),
    "write_batch_empty": lambda cache: cache.write_batch([]),
    "read_batch": lambda cache: cache.read_batch([(0, 1)]),
    "read_batch_empty": lambda cache: cache.read_batch([]),
    "prefetch": lambda cache: cache.prefetch(0, 1),
    "evict": lambda cache: cache.evict(0, 1),
}


def _argument_calls(cache: MemoryMappedCache, bad: Any) -> list[Callable[[], object]]:
    """Every call taking an offset, length or size, with ``bad`` in that position."""
    return [
        lambda: cache.write(bad, b"x"),
        lambda: cache.read(bad, 1),
        lambda: cache.read(0, bad),
        lambda: cache.resize(bad),
        lambda: cache.finalize(bad),
        lambda: cache.write_batch([(bad, b"x")]),
        lambda: cache.read_batch([(0, bad)]),
        lambda: cache.prefetch(bad, 1),
        lambda: cache.evict(0, bad),
    ]


def _write_while_looping(
    cache: MemoryMappedCache, data: bytes, step: int, loops: Sequence[Callable[[], object]]
) -> None:
    """Append ``data`` in ``step``-byte writes while each of ``loops`` runs over and over in a
    thread of its own; the first failure in a thread fails the test."""
    failures: list[BaseException] = []
    done = threading.Event()

    def repeat(call: Callable[[], object]) -> None:
        try:
            while not done.is_set():
                call()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=repeat, args=(call,)) for call in loops]
    for thread in threads:
        thread.start()
    try:
        for start in range(0, len(data), step):
            cache.write(start, data[start : start + step])
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[0]


class CacheConformance:
    """The contract of :class:`~mmstream.cache.MemoryMappedCache`, as pytest tests.

    Not collected itself (no ``Test`` prefix); a subclass named ``Test...`` that provides
    the ``make_cache`` fixture is.
    """

    # -- fixtures -------------------------------------------------------------------------------

    @pytest.fixture
    def options(self) -> CacheOptions:
        return CacheOptions(segment_size=SEGMENT, batch_limit=BATCH_LIMIT, min_growth=4096)

    @pytest.fixture
    def cache_path(self, tmp_path: Path) -> Path:
        return tmp_path / "stream.data"

    @pytest.fixture
    def new_cache(
        self, make_cache: CacheFactory, cache_path: Path, options: CacheOptions
    ) -> Iterator[Callable[..., MemoryMappedCache]]:
        """Build caches (closed, nothing created) and close them all at the end."""
        made: list[MemoryMappedCache] = []

        def build(path: Path = cache_path) -> MemoryMappedCache:
            cache = make_cache(path, options)
            made.append(cache)
            return cache

        yield build
        for cache in made:
            cache.close()

    @pytest.fixture
    def cache(self, new_cache: Callable[..., MemoryMappedCache]) -> MemoryMappedCache:
        """A freshly created cache with ``INITIAL`` bytes reserved."""
        cache = new_cache()
        cache.create(INITIAL)
        return cache

    # -- create / open / close ----------------------------------------------------------------

    def test_meets_the_protocol(self, cache: MemoryMappedCache) -> None:
        assert isinstance(cache, MemoryMappedCache)

    def test_create_reserves_the_initial_size(
        self, cache: MemoryMappedCache, cache_path: Path
    ) -> None:
        assert cache.is_open
        assert cache.path == cache_path
        assert (cache.size, cache.data_end) == (INITIAL, 0)
        assert cache_path.stat().st_size == INITIAL
        assert cache.read(0, 10) == b""  # reserved is not written

    def test_create_with_nothing_reserved(
        self, new_cache: Callable[..., MemoryMappedCache]
    ) -> None:
        cache = new_cache()
        cache.create(0)
        assert (cache.size, cache.data_end) == (0, 0)
        assert cache.write(0, b"first") == 5
        assert cache.read(0, 100) == b"first"

    def test_create_refuses_an_existing_file(
        self, new_cache: Callable[..., MemoryMappedCache], cache_path: Path
    ) -> None:
        cache_path.write_bytes(b"keep me")
        cache = new_cache()
        with pytest.raises(StorageError) as info:
            cache.create(INITIAL)
        assert info.value.errno == errno.EEXIST
        assert not cache.is_open
        assert cache_path.read_bytes() == b"keep me"

    @pytest.mark.parametrize("target_exists", [False, True])
    def test_create_does_not_follow_a_symlink(
        self, new_cache: Callable[..., MemoryMappedCache], tmp_path: Path, target_exists: bool
    ) -> None:
        target = tmp_path / "elsewhere"
        if target_exists:
            target.write_bytes(b"not yours")
        link = tmp_path / "link.data"
        link.symlink_to(target)
        cache = new_cache(link)
        with pytest.raises(StorageError):
            cache.create(INITIAL)
        assert not cache.is_open
        assert target.exists() == target_exists
        if target_exists:
            assert target.read_bytes() == b"not yours"

    def test_open_does_not_follow_a_symlink(
        self, new_cache: Callable[..., MemoryMappedCache], tmp_path: Path
    ) -> None:
        target = tmp_path / "elsewhere"
        target.write_bytes(b"not yours")
        link = tmp_path / "link.data"
        link.symlink_to(target)
        cache = new_cache(link)
        with pytest.raises(StorageError):
            cache.open()
        assert not cache.is_open

    def test_open_a_missing_file(self, new_cache: Callable[..., MemoryMappedCache]) -> None:
        cache = new_cache()
        with pytest.raises(StorageError) as info:
            cache.open()
        assert info.value.errno == errno.ENOENT
        assert not cache.is_open

    def test_create_or_open_while_open_is_an_error(self, cache: MemoryMappedCache) -> None:
        with pytest.raises(InvalidArgumentError):
            cache.create(INITIAL)
        with pytest.raises(InvalidArgumentError):
            cache.open()
        assert cache.is_open

    def test_close_is_idempotent(self, cache: MemoryMappedCache) -> None:
        cache.write(0, b"abc")
        cache.close()
        cache.close()
        assert not cache.is_open
        assert cache.data_end == 3  # the properties still answer

    @pytest.mark.parametrize("method", sorted(_CALLS_AFTER_CLOSE))
    def test_use_after_close_raises(self, cache: MemoryMappedCache, method: str) -> None:
        cache.write(0, b"abc")
        cache.close()
        with pytest.raises(CacheClosedError):
            _CALLS_AFTER_CLOSE[method](cache)

    def test_reopen_the_same_object_after_close(self, cache: MemoryMappedCache) -> None:
        data = pattern(SEGMENT + 10)
        cache.write(0, data)
        cache.close()
        cache.open()
        assert cache.read(0, len(data)) == data

    # -- writes and reads ---------------------------------------------------------------------

    def test_write_read_round_trip(self, cache: MemoryMappedCache) -> None:
        data = pattern(10_000)
        assert cache.write(0, data) == len(data)
        assert cache.data_end == len(data)
        assert cache.read(0, len(data)) == data
        assert cache.read(123, 456) == data[123:579]

    @pytest.mark.parametrize(
        "buffer",
        [
            bytearray(b"bytearray"),
            memoryview(b"..memoryview..")[2:-2],
            array.array("i", [1, -2, 3]),
        ],
        ids=["bytearray", "memoryview", "array"],
    )
    def test_write_takes_any_contiguous_buffer(self, cache: MemoryMappedCache, buffer: Any) -> None:
        expected = bytes(buffer)
        assert cache.write(7, buffer) == len(expected)
        assert cache.read(7, 100) == expected

    def test_overwrite_keeps_the_high_water_mark(self, cache: MemoryMappedCache) -> None:
        data = bytearray(pattern(1000))
        cache.write(0, data)
        cache.write(100, b"zz")
        data[100:102] = b"zz"
        assert cache.data_end == 1000
        assert cache.read(0, 1000) == data

    def test_empty_write_changes_nothing(self, cache: MemoryMappedCache) -> None:
        cache.write(0, b"abc")
        assert cache.write(0, b"") == 0
        assert cache.write(INITIAL + 50, b"") == 0
        assert (cache.data_end, cache.size) == (3, INITIAL)

    def test_write_past_the_size_grows_the_file(
        self, cache: MemoryMappedCache, cache_path: Path
    ) -> None:
        head = pattern(100)
        tail = pattern(500, seed=1)
        cache.write(0, head)
        offset = 3 * INITIAL + 11
        assert cache.write(offset, tail) == len(tail)
        assert cache.size >= offset + len(tail)
        assert cache.data_end == offset + len(tail)
        assert cache_path.stat().st_size == cache.size
        assert cache.read(0, cache.data_end) == head + bytes(offset - 100) + tail

    def test_appends_grow_across_many_segments(
        self, cache: MemoryMappedCache, cache_path: Path
    ) -> None:
        data = pattern(5 * SEGMENT + 77)
        for start in range(0, len(data), 997):
            chunk = data[start : start + 997]
            assert cache.write(start, chunk) == len(chunk)
            assert cache.data_end == start + len(chunk)
        assert cache.size >= len(data)
        assert cache_path.stat().st_size == cache.size
        assert cache.read(0, len(data)) == data

    def test_writes_and_reads_span_segment_boundaries(self, cache: MemoryMappedCache) -> None:
        offset = SEGMENT - 100
        data = bytearray(pattern(3 * SEGMENT + 333))
        cache.write(offset, data)
        assert cache.read(offset, len(data)) == data
        for boundary in range(SEGMENT, offset + len(data), SEGMENT):
            at = boundary - offset
            assert cache.read(boundary - 7, 14) == data[at - 7 : at + 7]
            cache.write(boundary - 3, b"<=|=>!")  # a small write across the boundary
            data[at - 3 : at + 3] = b"<=|=>!"
        assert cache.read(offset, len(data)) == data

    def test_reads_past_the_end(self, cache: MemoryMappedCache) -> None:
        data = pattern(1000)
        cache.write(0, data)
        assert cache.size > cache.data_end  # reserved bytes past the data stay hidden
        assert cache.read(990, 100) == data[990:]
        assert cache.read(1000, 5) == b""
        assert cache.read(0, 0) == b""
        assert cache.read(0, 2**63 - 1) == data
        with pytest.raises(OutOfRangeError):
            cache.read(1001, 1)
        with pytest.raises(OutOfRangeError):
            cache.read(2 * INITIAL, 1)

    def test_concurrent_reads_while_the_writer_grows_the_file(
        self, cache: MemoryMappedCache
    ) -> None:
        data = pattern(6 * SEGMENT)

        def read_some(rng: random.Random) -> None:
            end = cache.data_end
            start = rng.randrange(end + 1)
            length = rng.randrange(3 * SEGMENT)
            got = cache.read(start, length)
            assert got == data[start : start + len(got)]
            assert len(got) >= min(length, end - start)

        readers = [functools.partial(read_some, random.Random(seed)) for seed in range(3)]
        _write_while_looping(cache, data, 1500, readers)
        assert cache.read(0, len(data)) == data

    def test_flush_from_another_thread_while_writing(self, cache: MemoryMappedCache) -> None:
        data = pattern(4 * SEGMENT)
        _write_while_looping(cache, data, 2000, [cache.flush])
        assert cache.read(0, len(data)) == data

    # -- durability, reopen, finalize ---------------------------------------------------------

    def test_reopen_keeps_the_bytes(
        self,
        cache: MemoryMappedCache,
        new_cache: Callable[..., MemoryMappedCache],
        cache_path: Path,
    ) -> None:
        data = pattern(2 * SEGMENT + 321)
        cache.write(5, data)
        cache.flush()
        cache.flush()  # flushing twice is harmless
        cache.close()
        again = new_cache()
        again.open()
        assert again.data_end == again.size == cache_path.stat().st_size
        assert again.read(5, len(data)) == data
        assert again.read(0, 5) == bytes(5)

    def test_a_second_instance_sees_flushed_bytes(
        self, cache: MemoryMappedCache, new_cache: Callable[..., MemoryMappedCache]
    ) -> None:
        data = pattern(SEGMENT + 5)
        cache.write(0, data)
        cache.flush()
        other = new_cache()
        other.open()
        assert other.read(0, len(data)) == data

    def test_finalize_truncates_and_keeps_reads_working(
        self,
        cache: MemoryMappedCache,
        new_cache: Callable[..., MemoryMappedCache],
        cache_path: Path,
    ) -> None:
        data = pattern(2 * SEGMENT + 500)
        cache.write(0, data)
        final = len(data) - 200
        cache.finalize(final)
        assert cache.is_open
        assert cache.size == cache.data_end == final
        assert cache_path.stat().st_size == final
        assert cache.read(0, len(data)) == data[:final]
        assert cache.read(SEGMENT - 3, 6) == data[SEGMENT - 3 : SEGMENT + 3]
        assert cache.read(final, 1) == b""
        with pytest.raises(OutOfRangeError):
            cache.read(final + 1, 1)
        cache.close()
        again = new_cache()
        again.open()
        assert again.read(0, len(data)) == data[:final]

    def test_finalize_at_the_end_of_the_data(
        self, cache: MemoryMappedCache, cache_path: Path
    ) -> None:
        data = pattern(SEGMENT + 1)
        cache.write(0, data)
        cache.finalize(len(data))
        assert cache_path.stat().st_size == cache.size == len(data)
        assert cache.read(0, len(data) + 1) == data

    def test_finalize_to_nothing(self, cache: MemoryMappedCache, cache_path: Path) -> None:
        cache.write(0, pattern(SEGMENT + 1))
        cache.finalize(0)
        assert (cache.size, cache.data_end) == (0, 0)
        assert cache_path.stat().st_size == 0
        assert cache.read(0, 10) == b""

    def test_finalize_past_the_data_is_refused(self, cache: MemoryMappedCache) -> None:
        cache.write(0, b"12345")
        with pytest.raises(InvalidArgumentError):
            cache.finalize(6)
        assert (cache.data_end, cache.size) == (5, INITIAL)
        assert cache.read(0, 10) == b"12345"

    # -- resize -------------------------------------------------------------------------------

    def test_resize_up_then_down_to_the_data(
        self, cache: MemoryMappedCache, cache_path: Path
    ) -> None:
        data = pattern(SEGMENT + 10)
        cache.write(0, data)
        bigger = 3 * SEGMENT + 1
        cache.resize(bigger)
        assert cache.size == cache_path.stat().st_size == bigger
        assert cache.data_end == len(data)
        cache.resize(len(data))
        assert cache.size == cache_path.stat().st_size == len(data)
        assert cache.read(0, bigger) == data
        more = pattern(SEGMENT, seed=2)  # grows again after the shrink
        cache.write(len(data), more)
        assert cache.read(0, 3 * SEGMENT) == data + more

    def test_resize_never_cuts_written_data(self, cache: MemoryMappedCache) -> None:
        cache.write(0, b"0123456789")
        with pytest.raises(InvalidArgumentError):
            cache.resize(9)
        assert (cache.size, cache.data_end) == (INITIAL, 10)
        assert cache.read(0, 10) == b"0123456789"

    # -- batches ------------------------------------------------------------------------------

    def test_batches_round_trip(self, cache: MemoryMappedCache) -> None:
        chunks = [pattern(SEGMENT // 3, seed) for seed in range(BATCH_LIMIT)]
        ops = []
        offset = 0
        for chunk in chunks:
            ops.append((offset, chunk))
            offset += len(chunk)
        assert cache.write_batch(ops) == offset
        assert cache.data_end == offset
        reads = [(start, len(chunk)) for start, chunk in ops]
        assert cache.read_batch(reads) == chunks
        assert cache.read_batch([(offset - 2, 10), (offset, 10)]) == [chunks[-1][-2:], b""]
        assert cache.write_batch([]) == 0
        assert cache.read_batch([]) == []

    def test_batch_limit(self, cache: MemoryMappedCache) -> None:
        assert cache.write_batch([(i, b"a") for i in range(BATCH_LIMIT)]) == BATCH_LIMIT
        with pytest.raises(BatchLimitError):
            cache.write_batch([(BATCH_LIMIT + i, b"b") for i in range(BATCH_LIMIT + 1)])
        assert cache.data_end == BATCH_LIMIT  # a refused batch applies nothing
        assert len(cache.read_batch([(0, 1)] * BATCH_LIMIT)) == BATCH_LIMIT
        with pytest.raises(BatchLimitError):
            cache.read_batch([(0, 1)] * (BATCH_LIMIT + 1))

    # -- hostile arguments --------------------------------------------------------------------

    @pytest.mark.parametrize("bad", [-1, -(2**64), True, False, 1.0, "8", None])
    def test_arguments_that_are_not_sizes(self, cache: MemoryMappedCache, bad: Any) -> None:
        cache.write(0, b"intact")
        for call in _argument_calls(cache, bad):
            with pytest.raises(InvalidArgumentError):
                call()
        assert cache.read(0, 100) == b"intact"

    @pytest.mark.parametrize("huge", [2**63, 2**64, 2**100])
    def test_sizes_past_the_largest_file(self, cache: MemoryMappedCache, huge: int) -> None:
        cache.write(0, b"intact")
        for call in _argument_calls(cache, huge):
            with pytest.raises(OutOfRangeError):
                call()
        with pytest.raises(OutOfRangeError):
            cache.write(2**63 - 1, b"ab")
        assert cache.read(0, 100) == b"intact"

    def test_bad_initial_size(self, new_cache: Callable[..., MemoryMappedCache]) -> None:
        bad: Any
        for bad in [-1, 1.5, True, None]:
            cache = new_cache()
            with pytest.raises(InvalidArgumentError):
                cache.create(bad)
            assert not cache.is_open
        with pytest.raises(OutOfRangeError):
            new_cache().create(2**63)

    def test_a_write_no_file_system_can_hold(
        self, cache: MemoryMappedCache, cache_path: Path
    ) -> None:
        cache.write(0, b"intact")
        with pytest.raises(StorageError):
            cache.write(2**62, b"x")
        with pytest.raises(StorageError):
            cache.resize(2**62)
        assert cache.size == cache_path.stat().st_size == INITIAL
        assert cache.write(6, b"!") == 1
        assert cache.read(0, 100) == b"intact!"

    # -- hints --------------------------------------------------------------------------------

    def test_prefetch_and_evict_keep_the_bytes(self, cache: MemoryMappedCache) -> None:
        data = pattern(3 * SEGMENT + 9)
        cache.write(1, data)
        end = cache.data_end
        cache.evict(0, end)  # dirty, never flushed: evicting must not lose it
        assert cache.read(1, len(data)) == data
        cache.prefetch(0, end)
        cache.prefetch(SEGMENT - 1, 2)
        cache.evict(SEGMENT - 1, 2)
        cache.prefetch(end, 10)
        cache.evict(0, 2**63 - 1)
        with pytest.raises(OutOfRangeError):
            cache.prefetch(end + 1, 1)
        with pytest.raises(OutOfRangeError):
            cache.evict(end + 1, 1)
        cache.flush()
        cache.evict(0, end)
        assert cache.read(1, len(data)) == data

    # -- a full disk --------------------------------------------------------------------------

    @pytest.fixture
    def small_file_system(self, tmp_path: Path) -> Iterator[Path]:
        """A 1 MiB tmpfs; mounting needs root (CI runs as root), otherwise the test skips."""
        mount_point = tmp_path / "small"
        mount_point.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        command = ["mount", "-t", "tmpfs", "-o", "size=1m", "mmstream-test", str(mount_point)]
        try:
            subprocess.run(command, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)

    def test_a_full_disk_is_no_space_error(
        self, make_cache: CacheFactory, options: CacheOptions, small_file_system: Path
    ) -> None:
        cache = make_cache(small_file_system / "stream.data", options)
        cache.create(4096)
        data = pattern(2 * 1024 * 1024)
        written = 0
        try:
            with pytest.raises(NoSpaceError):
                for start in range(0, len(data), 10_000):
                    written += cache.write(start, data[start : start + 10_000])
            assert 0 < written < len(data)
            assert cache.data_end == written
            assert cache.read(0, len(data)) == data[:written]
            cache.flush()
            cache.finalize(written)
            assert cache.read(0, len(data)) == data[:written]
        finally:
            cache.close()
