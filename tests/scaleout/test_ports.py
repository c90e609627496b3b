"""The ports a multi-worker test gives ``mmstream serve --workers``: consecutive, and
nothing else on the machine can take them while the workers start."""

from __future__ import annotations

import socket
from pathlib import Path

import trio
from scaleout_helpers import held_ports


def _ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


async def test_held_ports_are_out_of_the_kernels_reach_and_free_for_the_workers() -> None:
    """The regression test for "no consecutive free ports" under load: on main the base was
    a port ``bind(("127.0.0.1", 0))`` gave (always odd: Linux gives ``bind`` the odd ports
    of the ephemeral range, ``connect`` the even ones), so the port after it was one every
    loopback connection on the machine competes for, and thousands sit in TIME-WAIT while
    the test suites of several checkouts run; even once found free, a connection could take
    it before the worker bound it. The ports now lie below the ephemeral range, and are
    held (bound, not listening) until the test ends: a plain bind or a connection cannot
    take them, a server's listener (``SO_REUSEADDR``, as trio's and HAProxy's) can."""
    low, _ = _ephemeral_range()
    with held_ports(3) as base:
        assert base + 3 <= low
        for port in range(base, base + 3):
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port))
                except OSError:
                    pass
                else:
                    raise AssertionError(f"port {port} is not held")
        listeners = await trio.open_tcp_listeners(base + 1, host="127.0.0.1")
        async with listeners[0]:
            stream = await trio.open_tcp_stream("127.0.0.1", base + 1)
            await stream.aclose()
    with socket.socket() as again:  # let go of afterwards
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", base))
