"""Live listeners with no task of their own: the broadcaster's rounds write to them and one
watch per broadcaster notices them leaving (docs/fanout.md: ~17 KiB a listener with a task,
~2 KiB without)."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from icecast_helpers import (
    MP3_FRAME,
    exchange,
    live_source,
    open_listener,
    read_exactly,
    read_to_end,
    running_server,
)

from mmstream.server import RunningServer


def tasks() -> int:
    """Every Trio task running now."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def settled_tasks() -> int:
    """The task count once connection set-up is over (it stays the same for 0.2 s)."""
    last, same_since = tasks(), trio.current_time()
    with trio.fail_after(10):
        while trio.current_time() - same_since < 0.2:
            await trio.sleep(0.02)
            now = tasks()
            if now != last:
                last, same_since = now, trio.current_time()
    return last


async def listeners(server: RunningServer) -> int:
    _, _, body = await exchange(server, "GET /status-json.xsl HTTP/1.0\r\n\r\n")
    sources = json.loads(body)["icestats"].get("source", [])
    sources = sources if isinstance(sources, list) else [sources]
    return sum(int(source["listeners"]) for source in sources)


async def test_live_listeners_hold_no_task_and_their_leaving_is_noticed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await live_source(server, "radio", MP3_FRAME * 8, content_type="audio/mpeg")
        first, _, rest = await open_listener(server, "/streams/radio")
        await read_exactly(first, len(MP3_FRAME), rest)
        before = await settled_tasks()
        more = [await open_listener(server, "/streams/radio") for _ in range(12)]
        await source.send_all(MP3_FRAME)
        for stream, _, rest in more:
            await read_exactly(stream, len(MP3_FRAME), rest)  # the rounds write to them
        assert await listeners(server) == 13
        # With a task each, 12 more listeners were 12 more tasks (and their stacks).
        assert await settled_tasks() == before
        for stream, _, _ in more:
            await stream.aclose()
        with trio.fail_after(10):
            while await listeners(server) != 1:  # noqa: ASYNC110
                await trio.sleep(0.02)
        # The one left gets the stream's end, then the end of the response.
        await source.send_all(MP3_FRAME)
        await source.send_eof()
        body = await read_to_end(first)
        assert body.endswith(MP3_FRAME) and len(body) % len(MP3_FRAME) == 0
        await source.aclose()
        await first.aclose()


async def test_a_shutdown_closes_parked_listeners(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await live_source(server, "radio", MP3_FRAME * 8, content_type="audio/mpeg")
        parked = [await open_listener(server, "/streams/radio") for _ in range(3)]
        assert await listeners(server) == 3
        server.shutdown()
        with trio.fail_after(10):
            for stream, _, rest in parked:
                await read_to_end(stream, rest)  # closed by the server
                await stream.aclose()
        await source.aclose()
