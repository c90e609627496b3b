"""A relaying worker's owner look-ups against a real peer: a stream no peer uploads is
asked about at most once per ``within`` window, and the misses it remembers are bounded."""

from __future__ import annotations

from pathlib import Path

import trio
from icecast_helpers import live_source, running_server

from mmstream.config import ByteSize, CacheConfig, ClusterConfig, IcecastConfig
from mmstream.server._fanout import serve_fanout_hub
from mmstream.server._relay import Relays
from mmstream.streams import open_stream_manager


async def test_a_miss_is_remembered_within_its_window_and_misses_are_bounded(
    tmp_path: Path,
) -> None:
    config = CacheConfig(directory=tmp_path / "relay", initial_size=ByteSize(1 << 20))
    async with (
        running_server(tmp_path) as peer,
        open_stream_manager(config) as manager,
        trio.open_nursery() as nursery,
    ):
        hub = await nursery.start(serve_fanout_hub, manager, IcecastConfig())
        relays = Relays(hub, ClusterConfig(peers=(peer.url,)), own_url=None)
        assert await relays.get("late", within=60) is None  # no peer uploads it yet
        source = await live_source(peer, "late", b"OggS" + bytes(100))
        # Within the window the miss stands: no look-up, however many listeners ask.
        assert await relays.get("late", within=60) is None
        assert relays.running("late") is None
        # Past it (a window of 0), the peer is asked and the relay starts.
        found = await relays.get("late", within=0)
        assert found is not None and relays.running("late") is found[0]
        # Hostile: a flood of ids no peer has does not grow what is remembered (a worker
        # without peers: every look-up misses at once).
        alone = Relays(hub, ClusterConfig(), own_url=None)
        for i in range(3000):
            assert await alone.get(f"nosuch-{i}", within=60) is None
        assert len(alone._missed) <= 1024  # the bound is the point
        await source.aclose()
        nursery.cancel_scope.cancel()
