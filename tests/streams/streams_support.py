"""Helpers shared by the streams tests (imported by conftest.py and test modules)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs

from mmstream.cache import KiB, MiB
from mmstream.config import ByteSize, CacheConfig, MmapConfig
from mmstream.registry import BackendRegistry

#: The built-in backends; the mmap one is picked up as soon as its distribution is installed.
BUILTIN_BACKENDS = [name for name in BackendRegistry().names() if name in {"file", "mmap"}]


def make_config(directory: Path, backend: str, **changes: Any) -> CacheConfig:
    """Small sizes, so growth, quota and segment boundaries are reached with little data."""
    config = CacheConfig(
        directory=directory,
        backend=backend,
        initial_size=ByteSize(16 * KiB),
        max_cache_size=ByteSize(64 * MiB),
        mmap=MmapConfig(segment_size=ByteSize(1 * MiB)),
        sync_policy="finalize",
    )
    return attrs.evolve(config, **changes)


def run_then_kill_9(script: str, *args: str) -> None:
    """Run ``script`` in a fresh interpreter until it prints ``written``, then SIGKILL it:
    a crash at a moment the test chose."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"written\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
