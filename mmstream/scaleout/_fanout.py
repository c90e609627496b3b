"""``ls`` across nodes: ask every node directly, merge, and say where each stream lives.

Through the balancer, ``list`` reaches one node (the multiplexed endpoint names no stream to
hash), so a cluster-wide listing is a client-side fan-out over the node list. Nodes are
asked concurrently; one that cannot be reached is reported, not fatal, because a partial
listing is exactly what an operator needs during an outage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import attrs
import trio

from ..errors import InvalidArgumentError, MmstreamError
from ..protocol import StreamStat

__all__ = ["ClusterListing", "Placed", "list_cluster", "merge_listings", "node_urls"]


@attrs.frozen
class Placed:
    """A stream and the node holding it."""

    node: str
    stat: StreamStat
    #: Other nodes holding the same id: a stream created on a fallback node while its
    #: owner was down (docs/scaling.md, "The outage caveat").
    also_on: tuple[str, ...] = ()


@attrs.frozen
class ClusterListing:
    """What ``list`` across the cluster found, with the nodes it could not ask kept apart:
    a node down must not make the whole listing fail, nor pass unnoticed."""

    #: Sorted by stream id, then node.
    streams: tuple[Placed, ...]
    #: Node → why it could not be listed.
    failures: Mapping[str, str]


def node_urls(text: str) -> tuple[str, ...]:
    """``"h1:9001,ws://h2:9002"`` → WebSocket base URLs (``host:port`` means ``ws://``)."""
    urls = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise InvalidArgumentError(f"--nodes: empty entry in {text!r}")
        urls.append(item if "://" in item else f"ws://{item}")
    if len(set(urls)) != len(urls):
        raise InvalidArgumentError(f"--nodes: a node appears twice in {text!r}")
    return tuple(urls)


def merge_listings(
    results: Mapping[str, Sequence[StreamStat]], failures: Mapping[str, str] | None = None
) -> ClusterListing:
    holders: dict[str, list[str]] = defaultdict(list)
    for node, stats in results.items():
        for stat in stats:
            holders[stat.stream].append(node)
    placed = [
        Placed(node, stat, tuple(sorted(n for n in holders[stat.stream] if n != node)))
        for node, stats in results.items()
        for stat in stats
    ]
    placed.sort(key=lambda p: (p.stat.stream, p.node))
    return ClusterListing(tuple(placed), dict(failures or {}))


async def list_cluster(
    urls: Sequence[str], *, token: str | None = None, per_node: float = 10.0
) -> ClusterListing:
    """``list`` on every node at once; a node that fails or does not answer within
    ``per_node`` seconds lands in ``failures``."""
    results: dict[str, list[StreamStat]] = {}
    failures: dict[str, str] = {}

    # The client side loads only when a listing runs: `mmstream serve` registers this
    # module's command-line options, and a server never needs it.
    from ..client import connect

    async def list_one(url: str) -> None:
        with trio.move_on_after(per_node) as scope:
            try:
                async with connect(url, token=token, open_timeout=per_node) as client:
                    results[url] = await client.list()
            except MmstreamError as exc:
                failures[url] = str(exc)
        if scope.cancelled_caught:
            failures[url] = f"no answer within {per_node:g} s"

    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(list_one, url)
    return merge_listings(results, failures)
