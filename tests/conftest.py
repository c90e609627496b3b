"""Shared by every test directory: the reliability figures table, a RAM directory, the
server's log.

A test records a row with ``figure(test, what was tried, result)``; the session prints the
rows as the table docs/reliability.md records (``make soak`` prints the long variants')."""

from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio
from tier_moto import TEST_CREDENTIALS, MotoServer, free_port

from mmstream.config import IcecastConfig, TierConfig
from mmstream.logs import TextFormatter
from mmstream.metrics import Metrics
from mmstream.server._fanout import FanoutHub, serve_fanout_hub
from mmstream.streams import StreamManager

_FIGURES: list[tuple[str, str, str]] = []


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
async def hub(manager: StreamManager) -> AsyncIterator[FanoutHub]:
    """The server's one follow path over the test's ``manager`` (with its own metrics):
    what ``stream_response`` is given as ``follow`` (``hub.follow``) in tests without a
    server."""
    async with trio.open_nursery() as nursery:
        config, metrics = IcecastConfig(), Metrics(process=False)
        yield await nursery.start(serve_fanout_hub, manager, config, metrics)
        nursery.cancel_scope.cancel()


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """The server's log, formatted as ``mmstream serve`` writes it, DEBUG included (the
    access lines: each request's method and target): to check what never reaches it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("mmstream")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def figure() -> Callable[[str, str, str], None]:
    """``figure("2. Power loss", "what was tried", "result")``: a row of the table."""

    def record(test: str, tried: str, result: str) -> None:
        _FIGURES.append((test, tried, result))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    mode = "soak" if os.environ.get("MMSTREAM_SOAK") == "1" else "fast"
    terminalreporter.section(f"reliability figures ({mode} variants)")
    terminalreporter.write_line("| test | what was tried | result |")
    terminalreporter.write_line("|---|---|---|")
    for test, tried, result in sorted(_FIGURES, key=lambda row: _order(row[0])):
        terminalreporter.write_line(f"| {test} | {tried} | {result} |")


def _order(label: str) -> tuple[int, str]:
    number, _, _ = label.partition(".")
    return (int(number), label) if number.isdigit() else (99, label)


# -- the object-storage tier: a real S3 endpoint (moto's server mode) ----------------

_buckets = itertools.count()


def _running_moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """The session's S3 endpoint: each test takes a fresh bucket on it (``tier_config``)."""
    yield from _running_moto()


@pytest.fixture
def own_moto(aws_env: None) -> Iterator[MotoServer]:
    """A moto server of the test's own, to pause, stop and start."""
    yield from _running_moto()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def tier_config(moto: MotoServer, aws_env: None) -> TierConfig:
    """A fresh bucket on the session's moto server, and a tier configured for it."""
    bucket = f"tier-test-{next(_buckets)}"
    moto.create_bucket(bucket)
    return TierConfig(
        enabled=True, endpoint=moto.endpoint, bucket=bucket, prefix="t/", request_timeout=5.0
    )
