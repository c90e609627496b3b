"""Every installed backend against a ``bytearray`` model, driven by hypothesis.

The model is the readable bytes, ``data_end`` long. Bytes in a gap (a write past the end)
were never written but lie below the high-water mark, so the model holds zeros there, as
reserved file space reads. After close and reopen ``data_end`` is the file's size, so the
model grows by the reserved tail, again zeros.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from mmstream.cache import CacheFactory, CacheOptions, MemoryMappedCache
from mmstream.errors import InvalidArgumentError, OutOfRangeError
from mmstream.registry import BackendRegistry
from mmstream.testing import SEGMENT, pattern

OPTIONS = CacheOptions(segment_size=SEGMENT, batch_limit=8, min_growth=4096)
offsets = st.integers(0, 4 * SEGMENT)
lengths = st.integers(0, 2 * SEGMENT + 100)
seeds = st.integers(0, 2**16)


class CacheMachine(RuleBasedStateMachine):
    factory: CacheFactory

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="mmstream-prop-"))
        self.path = self.directory / "stream.data"
        self.cache: MemoryMappedCache = self.factory(self.path, OPTIONS)
        self.cache.create(1000)
        self.model = bytearray()

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.directory)

    def _write_model(self, offset: int, data: bytes) -> None:
        if data:
            if offset > len(self.model):
                self.model.extend(bytes(offset - len(self.model)))
            self.model[offset : offset + len(data)] = data

    @rule(offset=offsets, length=lengths, seed=seeds)
    def write(self, offset: int, length: int, seed: int) -> None:
        data = pattern(length, seed)
        assert self.cache.write(offset, data) == length
        self._write_model(offset, data)

    @rule(ops=st.lists(st.tuples(offsets, st.integers(0, SEGMENT), seeds), min_size=0, max_size=4))
    def write_batch(self, ops: list[tuple[int, int, int]]) -> None:
        batch = [(offset, pattern(length, seed)) for offset, length, seed in ops]
        assert self.cache.write_batch(batch) == sum(len(data) for _, data in batch)
        for offset, data in batch:
            self._write_model(offset, data)

    @rule(offset=offsets, length=lengths)
    def read(self, offset: int, length: int) -> None:
        if offset > len(self.model):
            with pytest.raises(OutOfRangeError):
                self.cache.read(offset, length)
        else:
            assert self.cache.read(offset, length) == self.model[offset : offset + length]

    @rule(ops=st.lists(st.tuples(st.integers(0, 4 * SEGMENT), lengths), max_size=4))
    def read_batch(self, ops: list[tuple[int, int]]) -> None:
        ops = [(min(offset, len(self.model)), length) for offset, length in ops]
        expected = [self.model[offset : offset + length] for offset, length in ops]
        assert self.cache.read_batch(ops) == expected

    @rule(extra=st.integers(-SEGMENT, 3 * SEGMENT))
    def resize(self, extra: int) -> None:
        new_size = max(0, len(self.model) + extra)
        if new_size < len(self.model):
            with pytest.raises(InvalidArgumentError):
                self.cache.resize(new_size)
        else:
            self.cache.resize(new_size)
            assert self.cache.size == new_size

    @rule()
    def flush(self) -> None:
        self.cache.flush()

    @rule(cut=st.integers(0, 2 * SEGMENT))
    def finalize(self, cut: int) -> None:
        final = max(0, len(self.model) - cut)
        self.cache.finalize(final)
        del self.model[final:]
        assert self.cache.size == final

    @rule(same_object=st.booleans())
    def close_and_reopen(self, same_object: bool) -> None:
        self.cache.close()
        if not same_object:
            self.cache = self.factory(self.path, OPTIONS)
        self.cache.open()
        self.model.extend(bytes(self.cache.size - len(self.model)))

    @rule(offset=offsets, length=lengths)
    def hints(self, offset: int, length: int) -> None:
        offset = min(offset, len(self.model))
        self.cache.prefetch(offset, length)
        self.cache.evict(offset, length)

    @invariant()
    def sizes_agree(self) -> None:
        assert self.cache.is_open
        assert self.cache.data_end == len(self.model)
        assert self.cache.size >= self.cache.data_end
        assert self.path.stat().st_size == self.cache.size


@pytest.mark.parametrize("backend", BackendRegistry().names())
def test_backend_behaves_like_a_bytearray(backend: str) -> None:
    machine = type(
        f"{backend}Machine", (CacheMachine,), {"factory": BackendRegistry().load(backend)}
    )
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None),
    )


@pytest.mark.parametrize("backend", BackendRegistry().names())
def test_segment_size_caps_every_backends_growth_step(backend: str, tmp_path: Path) -> None:
    """``[cache.mmap].segment_size`` is more than the mmap backend's mapping window: every
    backend, the file backend too, grows a file by at most one segment at a time
    (``grown_size``), as README.md and docs/backends.md say."""
    options = CacheOptions(segment_size=SEGMENT, min_growth=4096)
    cache = BackendRegistry().load(backend)(tmp_path / "stream", options)
    cache.create(4 * SEGMENT)
    cache.write(4 * SEGMENT, b"x")  # doubling would reach 8 segments; one more is the cap
    assert cache.size == 5 * SEGMENT
    cache.close()
