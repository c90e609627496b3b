"""A real server in its own thread and Trio run, for tests that drive it synchronously
(hypothesis cannot run async tests here, so each example runs its own ``trio.run``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from mmstream.config import Config
from mmstream.server import RunningServer, serve


@contextmanager
def server_in_a_thread(config: Config) -> Iterator[RunningServer]:
    """Serve ``config`` until the block ends, then shut down gracefully and join."""
    ready: queue.Queue[tuple[RunningServer, trio.lowlevel.TrioToken]] = queue.Queue()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server: RunningServer = await nursery.start(serve, config)
            ready.put((server, trio.lowlevel.current_trio_token()))

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    server, token = ready.get(timeout=30)
    try:
        yield server
    finally:
        trio.from_thread.run_sync(server.shutdown, trio_token=token)
        thread.join(30)
