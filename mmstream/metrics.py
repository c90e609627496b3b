"""Prometheus metrics for ``GET /metrics``, kept in a registry object that is passed around.

Nothing is registered on import and the process-wide ``prometheus_client.REGISTRY`` is never
touched: each :class:`Metrics` owns its registry, so two servers in one test process (or one
process embedding mmstream twice) do not collide.

Counters and histograms are updated where things happen (the hot paths pay one
``inc``/``observe``). The per-write ones are plain Python numbers read at scrape time
(:class:`_LoopCounter`, :class:`_LoopHistogram`): ``prometheus_client``'s take a lock and
cost 2 µs per append, 5% of the server's core with 1,000 real-time streams. What can be read off the manager at any moment — streams by status,
cache bytes used/reserved against the maximum — is collected at scrape time from a
:data:`CacheSnapshotSource` instead of being mirrored into gauges that could drift.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

import attrs
from attrs import validators as v
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__

__all__ = ["CacheSnapshot", "CacheSnapshotSource", "Metrics"]

#: How prometheus_client writes a bucket bound (``5e-05``, ``1.0``, ``+Inf``); untyped there.
_bound_label = cast(Callable[[float], str], floatToGoString)

# Appending 64 KiB to a mapping takes microseconds; an fsync takes milliseconds to seconds.
_MEMORY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0)  # fmt: skip
_DISK_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, 10.0)  # fmt: skip

_non_negative = v.ge(0)


@attrs.frozen
class CacheSnapshot:
    """The cache as the manager sees it at one moment."""

    #: Every status the manager knows, with a count (0 included, so series do not vanish).
    streams_by_status: Mapping[str, int]
    #: Bytes written to streams (what readers can read).
    used_bytes: int = attrs.field(validator=_non_negative)
    #: Bytes allocated on disk for streams (what counts against the quota).
    reserved_bytes: int = attrs.field(validator=_non_negative)
    max_bytes: int = attrs.field(validator=_non_negative)


CacheSnapshotSource = Callable[[], CacheSnapshot]


class _CacheCollector(Collector):
    """Reads a :class:`CacheSnapshot` at scrape time."""

    def __init__(self) -> None:
        self.source: CacheSnapshotSource | None = None

    def describe(self) -> Iterable[Metric]:
        # Names only, so registration can check for clashes without calling the source.
        return self._families(CacheSnapshot({}, 0, 0, 0))

    def collect(self) -> Iterable[Metric]:
        if self.source is None:
            return []
        return self._families(self.source())

    @staticmethod
    def _families(snapshot: CacheSnapshot) -> list[Metric]:
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


class _LoopCounter(Collector):
    """A counter updated only from the event loop's thread: a plain ``+=``, no lock."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def collect(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, value=self.value)]


class _LoopHistogram(Collector):
    """A histogram updated only from the event loop's thread: a bisect and two ``+=``."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = sorted(buckets)
        #: Observations per bucket (not cumulative), the last one for ``+Inf``.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def collect(self) -> Iterable[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += count
            buckets.append((_bound_label(bound), cumulative))
        return [
            HistogramMetricFamily(
                self.name, self.documentation, buckets=buckets, sum_value=self.sum
            )
        ]


class Metrics:
    """Every metric mmstream exports, in one registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        Info("mmstream_build", "mmstream's version.", registry=r).info({"version": __version__})
        self.bytes_in = _LoopCounter("mmstream_bytes_in", "Audio bytes appended to streams.")
        r.register(self.bytes_in)
        self.bytes_out = Counter(
            "mmstream_bytes_out",
            "Stream bytes sent to clients, by path (websocket read/tail, or http).",
            ["via"],
            registry=r,
        )
        #: The server points this at its front door's count (``set_function``).
        self.connections = Gauge(
            "mmstream_active_connections", "Open client connections (WebSocket and HTTP).",
            registry=r,
        )  # fmt: skip
        self.followers = Gauge(
            "mmstream_followers", "Readers following a stream as it grows (tail, live HTTP).",
            registry=r,
        )  # fmt: skip
        self.evictions = Counter(
            "mmstream_evictions", "READY streams evicted to make room.", registry=r
        )
        self.expiries = Counter(
            "mmstream_expiries", "UPLOADING streams expired after upload_ttl idle.", registry=r
        )
        self.errors = Counter(
            "mmstream_errors", "Errors answered to clients, by wire code.", ["code"], registry=r
        )
        self.write_seconds = _LoopHistogram(
            "mmstream_write_seconds", "Time to append one chunk to the cache.", _MEMORY_BUCKETS
        )
        self.read_seconds = _LoopHistogram(
            "mmstream_read_seconds", "Time to read one piece from the cache.", _MEMORY_BUCKETS
        )
        r.register(self.write_seconds)
        r.register(self.read_seconds)
        self.fsync_seconds = Histogram(
            "mmstream_fsync_seconds", "Time to make a stream durable (msync/fsync).",
            buckets=_DISK_BUCKETS, registry=r,
        )  # fmt: skip
        # The object-storage tier (docs/tiering.md); zero while it is off.
        #: The tier points this at its count of streams waiting to be copied or deleted.
        self.tier_backlog = Gauge(
            "mmstream_tier_backlog", "Streams waiting to be copied to (or deleted from) the bucket.",
            registry=r,
        )  # fmt: skip
        self.tier_uploads = Counter(
            "mmstream_tier_uploads", "Streams copied to the bucket.", registry=r
        )
        self.tier_uploaded_bytes = Counter(
            "mmstream_tier_uploaded_bytes", "Stream bytes copied to the bucket.", registry=r
        )
        self.tier_errors = Counter(
            "mmstream_tier_errors",
            "Failed bucket operations (upload, delete, read), each retried or answered.",
            ["op"],
            registry=r,
        )
        for via in ("websocket", "http"):
            self.bytes_out.labels(via)
        for op in ("upload", "delete", "read"):
            self.tier_errors.labels(op)
        self._cache = _CacheCollector()
        r.register(self._cache)
        if process:
            ProcessCollector(registry=r)

    # One call per event from the manager's hot paths (a lock and a bisect each).

    def observe_write(self, nbytes: int, seconds: float) -> None:
        self.bytes_in.inc(nbytes)
        self.write_seconds.observe(seconds)

    def observe_read(self, seconds: float) -> None:
        self.read_seconds.observe(seconds)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def watch_cache(self, source: CacheSnapshotSource | None) -> None:
        """Report ``source()`` at every scrape (``None`` stops)."""
        self._cache.source = source

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type; OpenMetrics if ``accept`` asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
