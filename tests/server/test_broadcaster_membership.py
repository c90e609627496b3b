"""Who is in a broadcaster's rounds: listeners come and go at any time (between two slices
of a round too), each leaves in O(1), and a round writes exactly the listeners present."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from mmstream.config import ByteSize, CacheConfig, IcecastConfig
from mmstream.server._encoders import Parts
from mmstream.server._fanout import Broadcaster, FanoutHub, Listener, serve_fanout_hub
from mmstream.streams import StreamManager, open_stream_manager


class Uncomparable(Listener):
    """A listener that fails the test if anything compares it with another: leaving a
    list of them (``list.remove``, ``in``) does; leaving a dict keyed by them does not."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("a listener was compared: removal scanned the others")

    __hash__ = Listener.__hash__


async def test_listeners_leave_without_a_scan_of_the_others(tmp_path: Path) -> None:
    """The regression test for O(1) removal: on main the listeners were a list, so each
    one leaving (a source ending, a mass disconnect) compared it with those before it:
    O(N²), ~10^8 comparisons with the event loop blocked at 15,000 listeners."""
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        broadcaster = Broadcaster(manager, "s", IcecastConfig())
        listeners = [Uncomparable(None, 0) for _ in range(20_000)]
        followers = [Uncomparable(None, 0, immediate=True) for _ in range(100)]
        for listener in [*listeners, *followers]:
            broadcaster.add(listener)
        random.Random(1).shuffle(listeners)
        for listener in [*listeners, *reversed(followers)]:
            broadcaster.remove(listener)
        assert not broadcaster.listeners and not broadcaster.followers
        broadcaster.remove(listeners[0])  # again: a no-op


class Checked:
    """A listener's socket that fails the test if it is written after its listener left
    the rounds; ``broken`` makes it fail as a socket whose peer is gone."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.owes = False
        self.left = False
        self.broken = False

    def write(self, parts: Parts) -> int:
        assert not self.left, "written after it left the rounds"
        if self.broken:
            self.left = True  # the round takes it out
            raise BrokenPipeError
        data = b"".join(parts)
        self.out += data
        return len(data)

    async def flush(self) -> None:
        return None


async def _manager(config: CacheConfig, task_status: trio.TaskStatus[StreamManager]) -> None:
    async with open_stream_manager(config) as manager:
        task_status.started(manager)
        await trio.sleep_forever()


@pytest.mark.parametrize("seed", range(4))
async def test_a_round_writes_exactly_the_listeners_present(tmp_path: Path, seed: int) -> None:
    """Listeners join, leave and break in random order while the stream grows, between the
    slices of the rounds too (a round of three listeners a slice): none is written after it
    left or twice the same bytes, and every one present gets every byte from where it
    joined."""
    rng = random.Random(seed)
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    stream = bytearray()
    async with trio.open_nursery() as nursery:
        manager = await nursery.start(_manager, config)
        hub: FanoutHub = await nursery.start(
            serve_fanout_hub, manager, IcecastConfig(send_interval=0.001)
        )
        await manager.create("s")
        broadcaster = hub.get("s")
        broadcaster.round_slice = 3
        present: dict[Listener, tuple[Checked, int]] = {}
        for step in range(400):
            choice = rng.random()
            if choice < 0.35 or not present:
                writer = Checked()
                listener = Listener(writer, broadcaster.edge)
                present[listener] = (writer, broadcaster.edge)
                broadcaster.add(listener)
            elif choice < 0.6:
                listener = rng.choice(list(present))
                broadcaster.remove(listener)
                present.pop(listener)[0].left = True
            elif choice < 0.7:
                listener = rng.choice(list(present))
                present.pop(listener)[0].broken = True
            else:
                piece = bytes([step % 256]) * rng.randrange(1, 50)
                stream += piece
                await manager.append("s", piece)
            await trio.lowlevel.checkpoint()
        stream += b"end"
        await manager.append("s", b"end")
        done = [len(stream) - at for _, at in present.values()]
        with trio.fail_after(5):  # the rounds run on a timer: no task-blocked check tells
            while [len(writer.out) for writer, _ in present.values()] != done:  # noqa: ASYNC110
                await trio.sleep(0.005)
        assert {*broadcaster.listeners} == {*present}
        for writer, at in present.values():
            assert bytes(writer.out) == stream[at:]
        nursery.cancel_scope.cancel()
