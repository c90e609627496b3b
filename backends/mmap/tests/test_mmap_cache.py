"""What is particular to the mmap backend; the shared contract runs in
tests/test_backend_conformance.py (and here once more, on the msync path)."""

from __future__ import annotations

import array
import itertools
import mmap
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmstream_mmap import MmapCache
from mmstream_mmap._cache import _prefault_executor, _prefault_window

from mmstream.cache import CacheFactory, CacheOptions, MmapWrite
from mmstream.errors import InvalidArgumentError, OutOfRangeError
from mmstream.testing import SEGMENT, CacheConformance, pattern

GRANULE = mmap.ALLOCATIONGRANULARITY
_counter = itertools.count()


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
        assert not cache.prefault_state().enabled
    finally:
        cache.close()


def test_pwrite_writes_at_most_16_kib_a_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of frames, and one large frame, reach the file in calls of 16 KiB at most
    (frames that follow each other still share a call): the page cache takes a larger
    write in larger folios, which on this project's virtual machines come from memory the
    host faults in again (docs/performance.md). The calls are counted on the real file.
    Regression test for 16 KiB: main wrote 64 KiB a call."""
    sizes: list[int] = []
    real_pwrite, real_pwritev = os.pwrite, os.pwritev

    def pwrite(fd: int, data: Any, offset: int) -> int:
        sizes.append(memoryview(data).nbytes)
        return real_pwrite(fd, data, offset)

    def pwritev(fd: int, buffers: Any, offset: int) -> int:
        sizes.append(sum(memoryview(b).nbytes for b in buffers))
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "pwritev", pwritev)
    cache = MmapCache(tmp_path / "s", CacheOptions(min_growth=4096))
    cache.create(4 << 20)
    try:
        data = pattern(3 << 20)
        frames = [data[i : i + 4096] for i in range(0, 1 << 20, 4096)]
        ops = [(i * 4096, frame) for i, frame in enumerate(frames)]
        assert cache.write_batch(ops) == 1 << 20  # 256 frames of 4 KiB: 64 calls
        assert sorted(set(sizes)) == [16 * 1024] and len(sizes) == 64
        sizes.clear()
        assert cache.write(1 << 20, data[1 << 20 :]) == 2 << 20  # one 2 MiB frame: 128 calls
        assert sorted(set(sizes)) == [16 * 1024] and sum(sizes) == 2 << 20
        sizes.clear()
        # The server's 64 KiB upload frame, written where the file already is: 4 calls.
        assert cache.write(0, bytes(data[:65536])) == 65536
        assert sizes == [16 * 1024] * 4
        sizes.clear()
        # Off a 16 KiB boundary, the pieces still end on them: each fills whole folios.
        assert cache.write(100, data[100:65636]) == 65536
        assert sizes == [16 * 1024 - 100, 16 * 1024, 16 * 1024, 16 * 1024, 100]
        assert cache.read(0, len(data)) == data
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
            segments = cache.segments
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
            if not cache.prefault_state().enabled:
                pytest.skip("this kernel refuses MADV_POPULATE_WRITE (before Linux 5.14)")
            assert not cache.prefault_state().populating
            assert (
                cache.data_end + _prefault_window() // 2
                <= cache.prefault_state().prefaulted
                <= cache.size
            )
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
        assert not cache.prefault_state().populating
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


def test_create_prefaults_the_first_window(tmp_path: Path) -> None:
    """The first window is populated by ``create`` itself, before any byte arrives: a worker
    started by the first write would fault the same pages as the writer."""
    cache = MmapCache(tmp_path / "s", CacheOptions(mmap_write="mapping"))
    cache.create(64 * 1024 * 1024)
    try:
        if not cache.prefault_state().enabled:
            pytest.skip("this kernel refuses MADV_POPULATE_WRITE (before Linux 5.14)")
        assert cache.prefault_state().prefaulted == _prefault_window()
        assert not cache.prefault_state().populating
    finally:
        cache.close()


@pytest.mark.parametrize("mmap_write", ["pwrite", "mapping"])
@pytest.mark.parametrize(
    "bad",
    [-1, True, 2**63, "0", None],
    ids=["negative", "bool", "too-large", "str", "none"],
)
def test_a_bad_op_anywhere_in_a_batch_applies_nothing(
    tmp_path: Path, bad: object, mmap_write: MmapWrite
) -> None:
    options = CacheOptions(segment_size=SEGMENT, min_growth=4096, mmap_write=mmap_write)
    cache = MmapCache(tmp_path / "s", options)
    cache.create(0)
    try:
        cache.write(0, b"before")
        size = cache.size
        with pytest.raises((InvalidArgumentError, OutOfRangeError)):
            cache.write_batch([(6, b"a"), (7, b"b" * 3 * SEGMENT), (bad, b"c")])  # type: ignore[list-item]
        assert (cache.data_end, cache.size) == (6, size)
        assert cache.read(0, 100) == b"before"
    finally:
        cache.close()


@pytest.mark.parametrize("mmap_write", ["pwrite", "mapping"])
def test_a_batch_with_a_non_contiguous_buffer_applies_nothing(
    tmp_path: Path, mmap_write: MmapWrite
) -> None:
    options = CacheOptions(segment_size=SEGMENT, min_growth=4096, mmap_write=mmap_write)
    cache = MmapCache(tmp_path / "s", options)
    cache.create(0)
    try:
        with pytest.raises(TypeError, match="contiguous"):
            cache.write_batch([(0, b"abc"), (3, memoryview(b"abcdef")[::2])])
        assert cache.data_end == 0
    finally:
        cache.close()


_BUFFERS = st.one_of(
    st.binary(max_size=3 * SEGMENT),
    st.binary(max_size=300).map(bytearray),
    st.binary(max_size=300).map(memoryview),
    st.binary(max_size=300).map(lambda b: memoryview(b)[1:]),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50).map(lambda v: array.array("i", v)),
    st.binary(min_size=4, max_size=400).map(
        lambda b: memoryview(b[: len(b) // 2 * 2]).cast("B", (len(b) // 2, 2))
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 6 * SEGMENT), _BUFFERS), max_size=8),
        min_size=1,
        max_size=4,
    ),
    prefault=st.booleans(),
    mmap_write=st.sampled_from(["pwrite", "mapping"]),
)
def test_batches_match_a_model_across_segments_and_growth(
    tmp_path: Path, batches: list[list[tuple[int, Any]]], prefault: bool, mmap_write: MmapWrite
) -> None:
    """Batches of any buffers at any offsets (overwrites, holes, spans of segment ends,
    growth, earlier segments, empty ops) leave exactly what the same writes in order
    leave in a bytearray; single writes after them take the fast path correctly too."""
    path = tmp_path / f"s{next(_counter)}"
    options = CacheOptions(
        segment_size=SEGMENT, min_growth=4096, prefault=prefault, mmap_write=mmap_write
    )
    cache = MmapCache(path, options)
    cache.create(0)
    model = bytearray()
    try:
        for batch in batches:
            total = 0
            for offset, data in batch:
                flat = bytes(data)
                if flat:
                    model.extend(bytes(max(0, offset + len(flat) - len(model))))
                    model[offset : offset + len(flat)] = flat
                total += len(flat)
            assert cache.write_batch(batch) == total
            assert cache.data_end == len(model)
        assert cache.read(0, len(model) + 1) == bytes(model)
        cache.write(len(model), b"tail")
        assert cache.read(0, len(model) + 4) == bytes(model) + b"tail"
    finally:
        cache.close()
        path.unlink()
