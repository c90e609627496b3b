"""A real server in its own thread and Trio run, for tests that drive it synchronously
(hypothesis cannot run async tests here, so each example runs its own ``trio.run``)."""

from __future__ import annotations

import logging
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


class Captured(logging.Handler):
    """Every record of the server's loggers; a test fails on a traceback or an error."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self, since: int = 0) -> list[str]:
        """The failures among the records from index ``since`` on."""
        return [
            self.format(r)
            for r in self.records[since:]
            if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
        ]


@contextmanager
def logged_server_in_a_thread(config: Config) -> Iterator[tuple[RunningServer, Captured]]:
    """:func:`server_in_a_thread`, with every INFO-and-above log record captured."""
    captured = Captured()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(captured)
    root.setLevel(logging.INFO)
    try:
        with server_in_a_thread(config) as server:
            yield server, captured
    finally:
        root.removeHandler(captured)
        root.setLevel(old_level)
