"""What is particular to the mmap backend; the shared contract runs in
tests/test_backend_conformance.py (and here once more, on the msync path)."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
from mmstream_mmap import MmapCache
from mmstream_mmap._cache import _prefault_executor, _prefault_window

from mmstream.cache import CacheFactory, CacheOptions
from mmstream.errors import InvalidArgumentError
from mmstream.testing import SEGMENT, CacheConformance, pattern

GRANULE = mmap.ALLOCATIONGRANULARITY


class _MsyncCache(MmapCache):
    sync_through_fd = False


class TestMsyncPathWithoutPrefault(CacheConformance):
    """The msync flush used off Linux, and writes through the mapping with no pre-faulting."""

    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        return _MsyncCache

    @pytest.fixture
    def options(self) -> CacheOptions:
        return CacheOptions(
            segment_size=SEGMENT,
            batch_limit=8,
            min_growth=4096,
            prefault=False,
            mmap_write="mapping",
        )


class TestWritesThroughTheMapping(CacheConformance):
    """``mmap_write = "mapping"``: copies into the mapped pages, pre-faulted ahead."""

    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        return MmapCache

    @pytest.fixture
    def options(self) -> CacheOptions:
        return CacheOptions(
            segment_size=SEGMENT, batch_limit=8, min_growth=4096, mmap_write="mapping"
        )


class TestPwriteWithTheMsyncFlush(CacheConformance):
    """The default pwrite writes where flush would otherwise msync: the descriptor syncs."""

    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        return _MsyncCache

    @pytest.fixture
    def options(self) -> CacheOptions:
        return CacheOptions(segment_size=SEGMENT, batch_limit=8, min_growth=4096)


def test_pwrite_is_the_default_and_needs_no_prefault(tmp_path: Path) -> None:
    cache = MmapCache(tmp_path / "s", CacheOptions(segment_size=SEGMENT, min_growth=4096))
    cache.create(SEGMENT)
    try:
        data = pattern(3 * SEGMENT + 17)
        assert cache.write(0, data[:100]) == 100
        assert (
            cache.write_batch([(100, data[100:SEGMENT]), (SEGMENT, data[SEGMENT:])])
            == len(data) - 100
        )
        assert cache.read(0, len(data)) == data  # through the mapping, grown on the way
        assert cache.size >= len(data)
        assert not cache._prefault
    finally:
        cache.close()


@pytest.mark.parametrize("segment_size", [GRANULE + 1, GRANULE // 2, 3 * GRANULE - 512])
def test_segment_size_must_be_whole_allocation_units(tmp_path: Path, segment_size: int) -> None:
    with pytest.raises(InvalidArgumentError, match="allocation granularity"):
        MmapCache(tmp_path / "s", CacheOptions(segment_size=segment_size))


def test_growth_never_maps_a_segment_again(tmp_path: Path) -> None:
    """Full segments stay as they are; the partial last one grows in place (mremap), so
    pages already touched keep their page tables."""
    cache = MmapCache(tmp_path / "s", CacheOptions(segment_size=SEGMENT, min_growth=4096))
    cache.create(0)
    try:
        data = pattern(6 * SEGMENT + 5)
        seen: dict[int, mmap.mmap] = {}
        for start in range(0, len(data), 1000):
            cache.write(start, data[start : start + 1000])
            segments = cache._segments
            for index, segment in enumerate(segments):
                assert seen.setdefault(index, segment) is segment
            assert sum(len(s) for s in segments) == cache.size
        assert len(seen) == 7
        assert cache.read(0, len(data)) == data
    finally:
        cache.close()


def _prefault_settled() -> None:
    """Wait for the (single) prefault worker to finish what was scheduled so far."""
    _prefault_executor().submit(lambda: None).result(timeout=30)


def test_prefault_runs_ahead_of_the_writer(tmp_path: Path) -> None:
    cache = MmapCache(tmp_path / "s", CacheOptions(mmap_write="mapping"))
    cache.create(64 * 1024 * 1024)
    try:
        chunk = pattern(64 * 1024)
        for index in range(100):
            cache.write(index * len(chunk), chunk)
            _prefault_settled()
            if not cache._prefault:
                pytest.skip("this kernel refuses MADV_POPULATE_WRITE (before Linux 5.14)")
            assert not cache._populating
            assert cache.data_end + _prefault_window() // 2 <= cache._prefaulted <= cache.size
        assert cache.read(0, 100 * len(chunk)) == chunk * 100
    finally:
        cache.close()


@pytest.mark.parametrize("end", ["close", "finalize", "shrink", "grow"])
def test_prefault_worker_never_races_a_change_of_the_mappings(tmp_path: Path, end: str) -> None:
    """Windows scheduled and then overtaken by close/finalize/resize are skipped or applied
    to the mappings of the moment, never to unmapped memory; the bytes stay exact."""
    options = CacheOptions(segment_size=SEGMENT, min_growth=4096, mmap_write="mapping")
    for round_ in range(20):
        cache = MmapCache(tmp_path / f"s{round_}", options)
        cache.create(0)
        data = pattern(3 * SEGMENT + 123)
        for start in range(0, len(data), 7000):
            cache.write(start, data[start : start + 7000])
        match end:
            case "close":
                cache.close()
                cache.open()
            case "finalize":
                cache.finalize(len(data) - 5)
                data = data[:-5]
            case "shrink":
                cache.resize(cache.data_end)
            case "grow":
                cache.resize(cache.size + 5 * SEGMENT)
        cache.write(len(data), b"tail")
        _prefault_settled()
        assert cache.read(0, len(data) + 4) == data + b"tail"
        assert not cache._populating
        cache.close()
        _prefault_settled()


def test_writes_after_finalize_grow_the_file_again(tmp_path: Path) -> None:
    cache = MmapCache(tmp_path / "s", CacheOptions(segment_size=SEGMENT, min_growth=4096))
    cache.create(SEGMENT)
    try:
        cache.write(0, b"a" * (SEGMENT + 3))
        cache.finalize(SEGMENT + 1)
        cache.write(SEGMENT + 1, b"b" * SEGMENT)
        assert cache.read(SEGMENT - 1, 4) == b"aabb"
        assert cache.data_end == 2 * SEGMENT + 1
    finally:
        cache.close()
