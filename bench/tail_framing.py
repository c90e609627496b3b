"""What framing a live tail's piece once saves: CPU per piece for N followers.

    python bench/tail_framing.py [--followers 100] [--size 4096]

Before the one follow path each WebSocket follower framed its own copy of a piece through
its ``websockets`` protocol (``send_binary`` then ``data_to_send``); now the stream's
broadcaster builds one frame (``WebSocketFrames.encode``) that every follower's socket is
given. No sockets: this is the framing's CPU alone (best of 200, ``process_time``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from websockets.protocol import State
from websockets.server import ServerProtocol

from mmstream.server._encoders import WebSocketFrames


def best_us(run: Callable[[], object], repeat: int = 200) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time_ns()
        run()
        best = min(best, time.process_time_ns() - start)
    return best / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    data = os.urandom(args.size)
    protocols = []
    for _ in range(args.followers):
        protocol = ServerProtocol()
        protocol.state = State.OPEN  # as after a handshake: only framing is measured
        protocols.append(protocol)
    encoder = WebSocketFrames(256 * 1024)

    def per_follower() -> None:
        for protocol in protocols:
            protocol.send_binary(data)
            protocol.data_to_send()

    def shared() -> None:
        parts, _ = encoder.encode(memoryview(data), None)
        for _protocol in protocols:
            sum(len(part) for part in parts)  # what each write is handed

    for name, run in (("framed per follower", per_follower), ("one shared frame", shared)):
        print(f"{name}: {best_us(run):.0f} µs per {args.size}-byte piece, "
              f"{args.followers} followers")  # fmt: skip


if __name__ == "__main__":
    main()
