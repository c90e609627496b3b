"""Three real nodes behind a real HAProxy on loopback: sharding by id, and a node's death."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from urllib.parse import quote

import pytest
import trio
from scaleout_helpers import needs_haproxy, open_local_cluster, served_by, wait_for_states

from mmstream.client import connect
from mmstream.errors import StreamNotFoundError
from mmstream.scaleout import list_cluster, serve_argv

pytestmark = [needs_haproxy, pytest.mark.slow]


def payload(stream: str) -> bytes:
    rng = random.Random(stream)
    return rng.randbytes(4096 + rng.randrange(60_000))


async def upload(url: str, stream: str) -> None:
    async with connect(url, stream=stream) as client:
        await client.upload(stream, payload(stream))


async def read(url: str, stream: str) -> bytes:
    async with connect(url, stream=stream) as client:
        return await client.read(stream)


async def each(
    items: Iterable[str], job: Callable[[str], Awaitable[None]], limit: int = 12
) -> None:
    limiter = trio.CapacityLimiter(limit)

    async def one(item: str) -> None:
        async with limiter:
            await job(item)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)


async def assert_readable(url: str, streams: Iterable[str]) -> None:
    async def check(stream: str) -> None:
        assert await read(url, stream) == payload(stream), stream

    await each(streams, check)


async def test_streams_live_on_one_node_and_survive_the_loss_of_another(tmp_path: Path) -> None:
    async with open_local_cluster(tmp_path, 3) as cluster:
        ids = [f"show-{i:02d}" for i in range(60)]
        await each(ids, lambda s: upload(cluster.url, s))
        await assert_readable(cluster.url, ids)

        # Each stream is on exactly one node, and every node got some.
        owner = {}
        for stream in ids:
            holders = cluster.holders(stream)
            assert len(holders) == 1, (stream, holders)
            owner[stream] = holders[0]
        shares = [sum(1 for o in owner.values() if o == i) for i in range(3)]
        assert all(shares), shares

        # The cross-node listing finds the same placement.
        urls = [cluster.node_url(i) for i in range(3)]
        listing = await list_cluster(urls)
        assert not listing.failures
        assert {p.stat.stream: urls.index(p.node) for p in listing.streams} == owner
        assert not any(p.also_on for p in listing.streams)

        # Every URL shape of an id reaches its owner: WebSocket path, HTTP playback path, a
        # query string, a percent-encoded id.
        for stream in ids[:12]:
            encoded = "".join(f"%{b:02X}" for b in stream.encode())
            for path in (
                f"/v1/streams/{stream}",
                f"/streams/{stream}",
                f"/v1/streams/{stream}?offset=5",
                f"/v1/streams/{encoded}",
                f"/streams/{quote(stream)}",
                f"/streams/{encoded}?download=1",
            ):
                status, node = await served_by(cluster.balancer, path)
                assert node == f"node-{owner[stream]}", (path, node)
                if path.startswith("/streams/"):  # HTTP playback: the owner has the bytes
                    assert status == 200, (path, status)

        # Kill the node holding the most streams.
        victim = shares.index(max(shares))
        pid = cluster.pid(victim)
        assert pid is not None
        lost = [s for s in ids if owner[s] == victim]
        kept = [s for s in ids if owner[s] != victim]
        os.kill(pid, signal.SIGKILL)
        killed_at = trio.current_time()
        await assert_readable(cluster.url, kept)  # even before HAProxy notices

        # HAProxy takes it out within its check interval x fall (+ one interval of phase).
        opts = cluster.options
        with trio.fail_after(opts.check_interval * (opts.fall + 1) + 1.0):
            await wait_for_states(cluster, {f"node-{victim}": "DOWN"})
        took = trio.current_time() - killed_at
        print(f"node-{victim} marked DOWN {took:.2f} s after SIGKILL")

        # Its streams are unavailable (a cache: until it returns); the others are not.
        for stream in lost:
            with pytest.raises(StreamNotFoundError):
                await read(cluster.url, stream)
        await assert_readable(cluster.url, kept)

        # New uploads succeed, also for ids that hashed to the dead node, and stay whole.
        fresh = [f"after-{i:02d}" for i in range(20)]
        await each(fresh, lambda s: upload(cluster.url, s))
        await assert_readable(cluster.url, fresh)
        for stream in fresh:
            holders = cluster.holders(stream)
            assert len(holders) == 1 and victim not in holders, (stream, holders)

        listing = await list_cluster(urls, per_node=2)
        assert list(listing.failures) == [urls[victim]]
        assert {p.stat.stream for p in listing.streams} == set(kept) | set(fresh)

        # The node returns (same port, same cache directory): its streams are back, and the
        # ids that moved while it was down move back with it (docs: "The outage caveat").
        argv = serve_argv(cluster.worker(victim), log_level="WARNING")
        revived = await trio.lowlevel.open_process(argv)
        try:
            with trio.fail_after(opts.check_interval * (opts.rise + 1) + 10):
                await wait_for_states(cluster, {f"node-{victim}": "UP"})
            await assert_readable(cluster.url, ids)
            moved = [
                s
                for s in fresh
                if (await served_by(cluster.balancer, f"/streams/{s}"))[1] == f"node-{victim}"
            ]
            assert moved
            # Uploaded elsewhere during the outage: unreachable through the balancer now, but
            # whole on the node that took them, and listed there by ls --nodes.
            listing = await list_cluster(urls)
            where = {p.stat.stream: p.node for p in listing.streams}
            for stream in moved:
                with pytest.raises(StreamNotFoundError):
                    await read(cluster.url, stream)
                assert where[stream] != urls[victim]
                assert await read(where[stream], stream) == payload(stream)
        finally:
            revived.kill()
            await revived.wait()
