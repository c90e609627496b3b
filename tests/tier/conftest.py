from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from tier_moto import TEST_CREDENTIALS, MotoServer, free_port

from mmstream.config import TierConfig

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
