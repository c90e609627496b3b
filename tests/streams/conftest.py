"""Fixtures for the streams tests: real backends found through the registry, real files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from streams_support import BUILTIN_BACKENDS, make_config

from mmstream.config import CacheConfig


@pytest.fixture(params=BUILTIN_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


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
