"""A real ``mmstream serve`` process for the player and cache tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_process import serve_process


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[str]:
    """``mmstream serve`` in a subprocess on a free port; yields its http:// base URL."""
    with serve_process(tmp_path) as base:
        yield base
