"""A real local cluster for tests: ``mmstream serve`` nodes and HAProxy as child processes.

Everything here talks to real processes over loopback: HAProxy's stats socket for what the
balancer thinks, plain HTTP/1.1 (h11) to see which node answers a path.
"""

from __future__ import annotations

import contextlib
import csv
import io
import random
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import h11
import pytest
import trio

from mmstream.scaleout import BalancerOptions, Endpoint, render_haproxy_config
from mmstream.scaleout._supervisor import Child, RestartPolicy, Supervisor, Worker, serve_argv

HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed: apt-get install haproxy (.ci/run installs it)",
)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def held_ports(count: int) -> Iterator[int]:
    """``count`` consecutive free loopback ports, held until the block ends; the first.

    Below the kernel's ephemeral range: there ``connect`` never takes a port (a free port
    next to one ``bind(("127.0.0.1", 0))`` gives is in ``connect``'s half of that range,
    where thousands sit in TIME-WAIT while several test suites run). Held bound and not
    listening, with ``SO_REUSEADDR`` set after a strict bind (nothing at all was on the
    port): no other bind takes them meanwhile, a server's listener with ``SO_REUSEADDR``
    (trio's, HAProxy's) binds them."""
    below = _ephemeral_low() - count
    for _ in range(200):
        base = random.randrange(min(20000, below - 1000), below)
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                held.append(socket.socket())
                held[-1].bind(("127.0.0.1", port))
                held[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except OSError:
            for s in held:
                s.close()
            continue
        try:
            yield base
        finally:
            for s in held:
                s.close()
        return
    raise AssertionError(f"no {count} consecutive free ports below {below + count}")


def _ephemeral_low() -> int:
    """Where the kernel's ephemeral ports begin (Linux; else the IANA range's start)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@attrs.frozen
class LocalCluster:
    supervisor: Supervisor
    balancer: Endpoint
    nodes: tuple[Endpoint, ...]
    cache_dirs: tuple[Path, ...]
    stats_socket: Path
    options: BalancerOptions

    @property
    def url(self) -> str:
        return f"ws://{self.balancer}"

    def worker(self, index: int) -> Worker:
        return Worker(index, self.nodes[index], self.cache_dirs[index])

    def node_url(self, index: int) -> str:
        return f"ws://{self.nodes[index]}"

    def pid(self, index: int) -> int | None:
        return self.supervisor.pid(f"node-{index}")

    def holders(self, stream: str) -> list[int]:
        """The nodes whose cache directory holds ``stream``'s data file."""
        return [i for i, d in enumerate(self.cache_dirs) if (d / f"{stream}.data").exists()]


@asynccontextmanager
async def open_local_cluster(
    tmp_path: Path,
    count: int = 3,
    *,
    check_interval: float = 1.0,
    node_config: Path | None = None,
    relays: bool = False,
    sources: bool = False,
) -> AsyncIterator[LocalCluster]:
    """``count`` nodes and HAProxy, all UP in HAProxy's view; every process is stopped by
    PID on the way out. Nodes are not restarted: tests kill them on purpose.
    ``node_config`` is the nodes' shared config file. With ``relays``, live listeners go to
    the least-loaded node, which relays from the owner. With ``sources``, HAProxy takes
    Icecast sources on ``options.source_bind`` too."""
    assert HAPROXY is not None
    *node_ports, lb_port, source_port = free_ports(count + 2)
    # Free ports are rarely consecutive, so no plan_workers: the same layout, any ports.
    workers = [
        Worker(i, Endpoint("127.0.0.1", port), tmp_path / f"node-{i}")
        for i, port in enumerate(node_ports)
    ]
    options = BalancerOptions(
        bind=Endpoint("127.0.0.1", lb_port),
        check_interval=check_interval,
        stats_socket=tmp_path / "haproxy.sock",
        relay_listeners=relays,
        source_bind=Endpoint("127.0.0.1", source_port) if sources else None,
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config([w.node for w in workers], options))
    peers = [w.node.endpoint for w in workers] if relays else []
    children = [
        Child(
            w.node.name,
            serve_argv(w, config=node_config, log_level="WARNING", peers=peers),
            w.node.endpoint,
        )
        for w in workers
    ]
    children.append(
        Child("haproxy", (HAPROXY, "-db", "-f", str(config)), options.bind, after_others=True)
    )
    supervisor = Supervisor(
        children,
        RestartPolicy(restart=False, stop_timeout=10, ready_timeout=20),
        report=lambda line: print(f"cluster: {line}", file=sys.stderr),
    )
    cluster = LocalCluster(
        supervisor,
        options.bind,
        tuple(w.listen for w in workers),
        tuple(w.cache_dir for w in workers),
        tmp_path / "haproxy.sock",
        options,
    )
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(30):
                await nursery.start(supervisor.run)
                await wait_for_states(cluster, {f"node-{i}": "UP" for i in range(count)})
            yield cluster
        finally:
            supervisor.stop()


async def server_states(stats_socket: Path) -> dict[str, str]:
    """``show stat`` on HAProxy's socket → {server name: "UP" | "DOWN" | ...}."""
    stream = await trio.open_unix_socket(str(stats_socket))
    async with stream:
        await stream.send_all(b"show stat\n")
        chunks = []
        while chunk := await stream.receive_some():
            chunks.append(chunk)
    text = b"".join(chunks).decode().lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        row["svname"]: row["status"].split()[0]
        for row in rows
        if row["pxname"] == "mmstream_nodes" and row["svname"] not in ("BACKEND", "FRONTEND")
    }


async def wait_for_states(cluster: LocalCluster, wanted: dict[str, str]) -> None:
    """Poll the stats socket until every named server has the wanted state."""
    while True:
        try:
            states = await server_states(cluster.stats_socket)
        except OSError:
            states = {}
        if all(states.get(name) == state for name, state in wanted.items()):
            return
        await trio.sleep(0.05)


async def served_by(address: Endpoint, path: str) -> tuple[int, str | None]:
    """A plain ``GET path`` → (status, the ``X-Mmstream-Node`` HAProxy stamped on it)."""
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        request = h11.Request(
            method="GET", target=path, headers=[("Host", "test"), ("Connection", "close")]
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some())
                continue
            if isinstance(event, h11.Response):
                node = dict(event.headers).get(b"x-mmstream-node")
                return event.status_code, node.decode() if node else None
            raise AssertionError(f"unexpected {event!r}")
