"""The metrics for ``GET /metrics``: plain numbers kept in an object that is passed around.

Every metric is a Python number updated from the event loop's thread (a ``+=``, no lock):
``prometheus_client``'s own take a lock and cost 2 µs per append, 5% of the server's core
with 1,000 real-time streams. What can be read off the manager at any moment (streams by
status, cache bytes used/reserved against the maximum) is read at scrape time from a
:data:`CacheSnapshotSource` instead of being mirrored into gauges that could drift.

``prometheus_client`` itself, with the HTTP server, WSGI and urllib modules its package
imports, loads at the first scrape (:mod:`mmstream._metrics_export`): a server that is
never scraped does not carry it (docs/fanout.md, "Memory per listener"). Each
:class:`Metrics` gets its own registry then; the process-wide ``prometheus_client.REGISTRY``
is never touched, so two servers in one process do not collide.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import attrs
from attrs import validators as v

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CacheSnapshot", "CacheSnapshotSource", "Metrics"]

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


class LoopCounter:
    """A counter, with one child per label value when ``labelnames`` is given."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.value = 0.0
        #: When counting began (the ``_created`` sample).
        self.created = time.time()
        #: Label values → their counter.
        self.children: dict[tuple[str, ...], LoopCounter] = {}

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def labels(self, *values: str) -> LoopCounter:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values}")
            child = self.children[values] = LoopCounter(self.name, self.documentation)
        return child


class LoopGauge:
    """A gauge moved by ``inc``/``dec``, or read from a function at scrape time."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0
        self._function: Callable[[], float] | None = None

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        self._function = function

    def get(self) -> float:
        return self.value if self._function is None else self._function()


class LoopHistogram:
    """A histogram: a bisect and two ``+=`` per observation."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = sorted(buckets)
        #: Observations per bucket (not cumulative), the last one for ``+Inf``.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        #: When observing began (the ``_created`` sample).
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


LoopMetric = LoopCounter | LoopGauge | LoopHistogram
_METRIC_TYPES = (LoopCounter, LoopGauge, LoopHistogram)


class Metrics:
    """Every metric mmstream exports."""

    def __init__(self, *, process: bool = True) -> None:
        #: Whether a scrape also reports the process (CPU, resident memory, open files).
        self.process = process
        self.bytes_in = LoopCounter("mmstream_bytes_in", "Audio bytes appended to streams.")
        self.bytes_out = LoopCounter(
            "mmstream_bytes_out",
            "Stream bytes sent to clients, by path (websocket read/tail, or http).",
            ["via"],
        )
        #: The server points this at its front door's count (``set_function``).
        self.connections = LoopGauge(
            "mmstream_active_connections", "Open client connections (WebSocket and HTTP)."
        )
        self.followers = LoopGauge(
            "mmstream_followers", "Readers following a stream as it grows (tail, live HTTP)."
        )
        self.evictions = LoopCounter("mmstream_evictions", "READY streams evicted to make room.")
        self.expiries = LoopCounter(
            "mmstream_expiries", "UPLOADING streams expired after upload_ttl idle."
        )
        self.errors = LoopCounter(
            "mmstream_errors", "Errors answered to clients, by wire code.", ["code"]
        )
        self.write_seconds = LoopHistogram(
            "mmstream_write_seconds", "Time to append one chunk to the cache.", _MEMORY_BUCKETS
        )
        self.read_seconds = LoopHistogram(
            "mmstream_read_seconds", "Time to read one piece from the cache.", _MEMORY_BUCKETS
        )
        self.fsync_seconds = LoopHistogram(
            "mmstream_fsync_seconds", "Time to make a stream durable (msync/fsync).",
            _DISK_BUCKETS,
        )  # fmt: skip
        # The object-storage tier (docs/tiering.md); zero while it is off.
        #: The tier points this at its count of streams waiting to be copied or deleted.
        self.tier_backlog = LoopGauge(
            "mmstream_tier_backlog", "Streams waiting to be copied to (or deleted from) the bucket."
        )
        self.tier_uploads = LoopCounter("mmstream_tier_uploads", "Streams copied to the bucket.")
        self.tier_uploaded_bytes = LoopCounter(
            "mmstream_tier_uploaded_bytes", "Stream bytes copied to the bucket."
        )
        self.tier_errors = LoopCounter(
            "mmstream_tier_errors",
            "Failed bucket operations (upload, delete, read), each retried or answered.",
            ["op"],
        )
        for via in ("websocket", "http"):
            self.bytes_out.labels(via)
        for op in ("upload", "delete", "read"):
            self.tier_errors.labels(op)
        #: What the cache snapshot families are read from at scrape time (None: absent).
        self.cache_source: CacheSnapshotSource | None = None

    def all(self) -> list[LoopMetric]:
        """Every metric above, in the order they are made (the order a scrape lists them):
        read off the attributes, so a metric added above cannot be left out of a scrape."""
        return [value for value in vars(self).values() if isinstance(value, _METRIC_TYPES)]

    # One call per event from the manager's hot paths (a bisect each).

    def observe_write(self, nbytes: int, seconds: float) -> None:
        self.bytes_in.inc(nbytes)
        self.write_seconds.observe(seconds)

    def observe_read(self, seconds: float) -> None:
        self.read_seconds.observe(seconds)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def watch_cache(self, source: CacheSnapshotSource | None) -> None:
        """Report ``source()`` at every scrape (``None`` stops)."""
        self.cache_source = source

    @cached_property
    def registry(self) -> CollectorRegistry:
        """A ``prometheus_client`` registry reading these metrics, made at the first scrape."""
        from ._metrics_export import build_registry

        return build_registry(self)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type; OpenMetrics if ``accept`` asks for it."""
        from ._metrics_export import render

        return render(self.registry, accept or "")
