"""The /metrics exposition parses with prometheus_client's own parser and says what happened."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from mmstream.metrics import CacheSnapshot, Metrics


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _exercised() -> Metrics:
    metrics = Metrics()
    metrics.watch_cache(
        lambda: CacheSnapshot(
            {"uploading": 2, "ready": 5, "error": 0},
            used_bytes=1234,
            reserved_bytes=64 << 20,
            max_bytes=8 << 30,
        )
    )
    metrics.bytes_in.inc(65536)
    metrics.bytes_out.labels("http").inc(100)
    metrics.connections.set_function(lambda: 3)
    metrics.followers.inc(3)
    metrics.evictions.inc()
    metrics.expiries.inc(2)
    metrics.errors.labels("not-found").inc()
    metrics.errors.labels("offset-conflict").inc(4)
    metrics.write_seconds.observe(3e-5)
    metrics.read_seconds.observe(2e-4)
    metrics.fsync_seconds.observe(0.02)
    return metrics


def test_everything_the_issue_lists_is_there() -> None:
    s = _samples(_exercised())
    assert s["mmstream_streams", (("status", "uploading"),)] == 2
    assert s["mmstream_streams", (("status", "ready"),)] == 5
    assert s["mmstream_streams", (("status", "error"),)] == 0
    assert s["mmstream_cache_used_bytes", ()] == 1234
    assert s["mmstream_cache_reserved_bytes", ()] == 64 << 20
    assert s["mmstream_cache_max_bytes", ()] == 8 << 30
    assert s["mmstream_bytes_in_total", ()] == 65536
    assert s["mmstream_bytes_out_total", (("via", "http"),)] == 100
    assert s["mmstream_bytes_out_total", (("via", "websocket"),)] == 0
    assert s["mmstream_active_connections", ()] == 3
    assert s["mmstream_followers", ()] == 3
    assert s["mmstream_evictions_total", ()] == 1
    assert s["mmstream_expiries_total", ()] == 2
    assert s["mmstream_errors_total", (("code", "not-found"),)] == 1
    assert s["mmstream_errors_total", (("code", "offset-conflict"),)] == 4
    assert s["mmstream_write_seconds_bucket", (("le", "5e-05"),)] == 1
    assert s["mmstream_write_seconds_bucket", (("le", "2.5e-05"),)] == 0
    assert s["mmstream_read_seconds_count", ()] == 1
    assert s["mmstream_fsync_seconds_sum", ()] == pytest.approx(0.02)
    assert s["mmstream_build_info", (("version", __import__("mmstream").__version__),)] == 1


def test_without_a_cache_source_the_cache_families_are_absent() -> None:
    s = _samples(Metrics(process=False))
    assert not any(name.startswith("mmstream_cache") for name, _ in s)
    assert s["mmstream_bytes_in_total", ()] == 0


def test_the_source_is_read_at_scrape_time() -> None:
    metrics = Metrics(process=False)
    used = [0]
    metrics.watch_cache(lambda: CacheSnapshot({"ready": 1}, used[0], used[0], 100))
    used[0] = 42
    assert _samples(metrics)["mmstream_cache_used_bytes", ()] == 42
    metrics.watch_cache(None)
    assert ("mmstream_cache_used_bytes", ()) not in _samples(metrics)


def test_instances_are_independent_and_the_global_registry_is_untouched() -> None:
    before = {m.name for m in REGISTRY.collect()}
    a, b = Metrics(), Metrics()
    a.bytes_in.inc(5)
    assert _samples(b)["mmstream_bytes_in_total", ()] == 0
    assert {m.name for m in REGISTRY.collect()} == before


def test_openmetrics_on_request() -> None:
    body, content_type = _exercised().render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    names = {family.name for family in parse_openmetrics(body.decode())}
    assert {"mmstream_bytes_in", "mmstream_streams", "mmstream_write_seconds"} <= names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_it() -> None:
    body, _ = _exercised().render()
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
