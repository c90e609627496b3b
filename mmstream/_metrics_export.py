"""``GET /metrics``'s exposition: :class:`~mmstream.metrics.Metrics` as Prometheus families.

Imported at the first scrape, with ``prometheus_client`` (whose package loads its HTTP
server, WSGI and urllib modules too); until then a server holds only the plain numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__
from .metrics import CacheSnapshot, LoopGauge, LoopHistogram, LoopMetric, Metrics

__all__ = ["build_registry", "render"]

#: How prometheus_client writes a bucket bound (``5e-05``, ``1.0``, ``+Inf``); untyped there.
_bound_label = cast(Callable[[float], str], floatToGoString)


def build_registry(metrics: Metrics) -> CollectorRegistry:
    """A registry of its own that reads ``metrics`` at every scrape (and the process's
    figures unless ``metrics.process`` is off)."""
    registry = CollectorRegistry()
    registry.register(_MetricsCollector(metrics))
    if metrics.process:
        ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition body and its content type; OpenMetrics if ``accept`` asks for it."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class _MetricsCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Names only, so registration can check for clashes without reading the cache.
        return [*self._metrics(), *_cache_families(CacheSnapshot({}, 0, 0, 0))]

    def collect(self) -> Iterable[Metric]:
        source = self.metrics.cache_source
        return [*self._metrics(), *(_cache_families(source()) if source is not None else [])]

    def _metrics(self) -> list[Metric]:
        build: list[Metric] = [
            InfoMetricFamily(
                "mmstream_build", "mmstream's version.", value={"version": __version__}
            )
        ]
        return build + [_family(metric) for metric in self.metrics.all()]


def _family(metric: LoopMetric) -> Metric:
    name, documentation = metric.name, metric.documentation
    if isinstance(metric, LoopGauge):
        return GaugeMetricFamily(name, documentation, value=metric.get())
    if isinstance(metric, LoopHistogram):
        cumulative, buckets = 0, []
        for bound, count in zip([*metric.bounds, float("inf")], metric.counts, strict=True):
            cumulative += count
            buckets.append((_bound_label(bound), cumulative))
        histogram = HistogramMetricFamily(name, documentation, buckets=buckets,
                                          sum_value=metric.sum)  # fmt: skip
        # The family takes no creation time; prometheus_client's Histogram writes this sample.
        histogram.add_sample(f"{name}_created", {}, metric.created)
        return histogram
    if not metric.labelnames:
        return CounterMetricFamily(name, documentation, value=metric.value,
                                   created=metric.created)  # fmt: skip
    counter = CounterMetricFamily(name, documentation, labels=metric.labelnames)
    for values, child in metric.children.items():
        counter.add_metric(list(values), child.value, created=child.created)
    return counter


def _cache_families(snapshot: CacheSnapshot) -> list[Metric]:
    streams = GaugeMetricFamily(
        "mmstream_streams", "Streams in the cache, by status.", labels=["status"]
    )
    for status, count in sorted(snapshot.streams_by_status.items()):
        streams.add_metric([status], count)
    return [
        streams,
        GaugeMetricFamily(
            "mmstream_cache_used_bytes",
            "Bytes written to streams (readable).",
            value=snapshot.used_bytes,
        ),
        GaugeMetricFamily(
            "mmstream_cache_reserved_bytes",
            "Bytes allocated on disk for streams (counted against the maximum).",
            value=snapshot.reserved_bytes,
        ),
        GaugeMetricFamily(
            "mmstream_cache_max_bytes",
            "The configured cache.max_cache_size.",
            value=snapshot.max_bytes,
        ),
    ]
