"""The reliability tests: each records its figure, and the session prints them as a table
(the one docs/reliability.md records). ``MMSTREAM_SOAK=1`` (``make soak``) runs the long
variants: more rounds, more sequences, more connections."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mmstream.registry import BackendRegistry

#: The built-in backends (the example plugin is checked by the conformance suite).
BACKENDS = [name for name in BackendRegistry().names() if name in {"file", "mmap"}]
#: ``make soak`` sets it; tests scale their counts with :func:`rounds`.
SOAK = os.environ.get("MMSTREAM_SOAK") == "1"

_FIGURES: list[tuple[str, str, str]] = []


def rounds(fast: int, soak: int) -> int:
    return soak if SOAK else fast


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def ram_path(tmp_path: Path) -> Iterator[Path]:
    """A directory in RAM (/dev/shm) where there is one, else ``tmp_path``: the fault models
    decide what is durable, so the tests need no real fsync, and real ones cost ~10 ms each."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="mmstream-test-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def figure() -> Callable[[str, str, str], None]:
    """``figure("2. Power loss", "what was tried", "result")``: a row of the table."""

    def record(test: str, tried: str, result: str) -> None:
        _FIGURES.append((test, tried, result))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    mode = "soak" if SOAK else "fast"
    terminalreporter.section(f"reliability figures ({mode} variants)")
    terminalreporter.write_line("| test | what was tried | result |")
    terminalreporter.write_line("|---|---|---|")
    for test, tried, result in sorted(_FIGURES, key=lambda row: _order(row[0])):
        terminalreporter.write_line(f"| {test} | {tried} | {result} |")


def _order(label: str) -> tuple[int, str]:
    number, _, _ = label.partition(".")
    return (int(number), label) if number.isdigit() else (99, label)
