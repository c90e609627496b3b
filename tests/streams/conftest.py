"""Fixtures for the streams tests: real backends found through the registry, real files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from mmstream.cache import KiB, MiB
from mmstream.config import ByteSize, CacheConfig
from mmstream.registry import BackendRegistry

#: The built-in backends; the mmap one is picked up as soon as its distribution is installed.
BUILTIN_BACKENDS = [name for name in BackendRegistry().names() if name in {"file", "mmap"}]


@pytest.fixture(params=BUILTIN_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def make_config(directory: Path, backend: str, **changes: Any) -> CacheConfig:
    """Small sizes, so growth, quota and segment boundaries are reached with little data."""
    config = CacheConfig(
        directory=directory,
        backend=backend,
        initial_size=ByteSize(16 * KiB),
        max_cache_size=ByteSize(64 * MiB),
        segment_size=ByteSize(1 * MiB),
        sync_policy="finalize",
    )
    return attrs.evolve(config, **changes)


@pytest.fixture
def configure(tmp_path: Path, backend: str) -> Callable[..., CacheConfig]:
    """``configure(sync_policy="always", ...)``: the test's config with changes."""

    def configure(**changes: Any) -> CacheConfig:
        changes.setdefault("directory", tmp_path / "cache")
        return make_config(changes.pop("directory"), backend, **changes)

    return configure


@pytest.fixture
def config(configure: Callable[..., CacheConfig]) -> CacheConfig:
    return configure()
