"""Fan-out benchmark: one live 128 kbit/s stream, N listeners, mmstream beside Icecast2.

    python bench/fanout.py [--counts 100,1000,5000] [--servers mmstream,icecast]

A source process pushes 320-byte records every 20 ms (128 kbit/s) with ``PUT`` and
``Expect: 100-continue``, as ffmpeg's icecast output does; each record carries its sequence
number and the CLOCK_MONOTONIC time it was sent. Listener processes (raw non-blocking sockets
on epoll, several processes so the listener side is not the bottleneck) connect N listeners
with a plain ``GET``, find the records in what they receive, and over a measurement window
count the records each listener got (delivery) and histogram ``receive time - send time``
(lag). The window opens once every listener is connected, so connection set-up is not
measured. Server CPU and RSS come from /proc over the same window, and each listener process
reports its own CPU so a saturated listener side shows.

Icecast2 (Debian's ``icecast2``) is configured in a temporary directory and run as the
``icecast2`` user (it refuses root). Both servers get the same source and the same
listeners. Needs Linux; the fd soft limit is raised to the hard limit in every process.

``--workers 2`` (or ``--runs 1:2000,2:3600``) spreads the listeners over mmstream workers
that relay the stream from its owner; ``--worker-cpu 0.3`` caps every server process at the
same fraction of a core (:mod:`cpu_cap`), so one worker and two compare like with like on a
machine with fewer cores than processes (docs/fanout.md, "Two workers").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _procs import free_port  # run as `python bench/fanout.py`: bench/ is on sys.path
from cpu_cap import (
    CpuCap,
    CpuCapError,
    CpuGroup,
    CpuGroups,
    open_cpu_groups,
    parse_fraction,
    uninterrupted,
)

RECORD = 320  # 20 ms at 128 kbit/s
PERIOD_NS = 20_000_000
MAGIC = b"MMBK"
_REC = struct.Struct("<4sQQ")
STREAM_ID = "bench"
TICK = os.sysconf("SC_CLK_TCK")
#: Listener processes run niced by default: a loopback send wakes its receiver, and on a small
#: machine a listener process that preempts the server on every send measures the scheduler,
#: not the server. Niced, they still get every idle cycle (their CPU is reported) — unless
#: other work keeps the machine busy, which then delays them (``--nice 0``).
NICE = 10


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- source ------------------------------------------------------------------------------


def run_source(host: str, port: int, path: str, auth: str | None, stop_at: int) -> None:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = [f"PUT {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: audio/mpeg",
            "Expect: 100-continue", "Ice-Name: bench", "Connection: close"]  # fmt: skip
    if auth:
        import base64

        head.append("Authorization: Basic " + base64.b64encode(auth.encode()).decode())
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit(f"source: server closed: {reply!r}")
        reply += chunk
    if b" 100 " not in reply.split(b"\r\n", 1)[0] and b" 200 " not in reply.split(b"\r\n", 1)[0]:
        raise SystemExit(f"source: refused: {reply!r}")
    print("streaming", flush=True)
    padding = bytes(RECORD - _REC.size)
    seq = 0
    start = now_ns()
    while True:
        due = start + seq * PERIOD_NS
        delay = due - now_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        sent = now_ns()
        if sent > stop_at:
            break
        sock.sendall(_REC.pack(MAGIC, seq, sent) + padding)
        seq += 1
    sock.close()


# -- listeners ---------------------------------------------------------------------------


class Conn:
    __slots__ = ("buf", "first", "head", "seen", "sock", "synced")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = True
        self.buf = b""
        self.seen = 0  # records with a send time inside the window
        self.first = 0  # receive time of the first record
        self.synced = False


def run_listeners(host: str, port: int, path: str, count: int, until: int, nice: int) -> None:
    """Connect ``count`` listeners; print "ready" once each has a record; then read the
    measurement window ("lo hi" in ns) from stdin, measure, and print the results."""
    raise_fd_limit()
    os.nice(nice)
    selector = selectors.DefaultSelector()
    request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: fanout-bench\r\n\r\n".encode()
    conns: list[Conn] = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect((host, port))
        sock.sendall(request)
        sock.setblocking(False)
        conn = Conn(sock)
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
        if i % 100 == 99:
            time.sleep(0.01)  # do not flood the accept queue
    os.set_blocking(0, False)
    selector.register(0, selectors.EVENT_READ, None)
    lo, hi = 1 << 62, 1 << 62
    waiting = count
    hist: dict[int, int] = {}
    closed = 0
    cpu0 = 0.0
    while now_ns() < until:
        for key, _ in selector.select(timeout=0.1):
            conn = key.data
            if conn is None:  # the coordinator sends the window
                line = os.read(0, 100).split()
                if line:
                    lo, hi = int(line[0]), int(line[1])
                    until = hi + int(1e9)
                    cpu0 = time.process_time()
                selector.unregister(0)
                continue
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            received = now_ns()
            if not data:
                selector.unregister(conn.sock)
                conn.sock.close()
                closed += 1
                continue
            buf = conn.buf + data if conn.buf else data
            if conn.head:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    conn.buf = buf
                    continue
                conn.head = False
                buf = buf[end + 4 :]
            if not conn.synced:
                at = buf.find(MAGIC)
                if at < 0:
                    conn.buf = buf[-3:]
                    continue
                buf = buf[at:]
                conn.synced = True
                if not conn.first:
                    conn.first = received
                    waiting -= 1
                    if not waiting:
                        print("ready", flush=True)
            usable = len(buf) - len(buf) % RECORD
            for at in range(0, usable, RECORD):
                magic, _seq, sent = _REC.unpack_from(buf, at)
                if magic != MAGIC:  # a skip by the server: find the next record
                    conn.synced = False
                    usable = at
                    break
                if lo <= sent <= hi:
                    conn.seen += 1
                    lag = (received - sent) // 1_000_000
                    hist[lag] = hist.get(lag, 0) + 1
            conn.buf = buf[usable:]
    cpu = time.process_time() - cpu0
    seen = [c.seen for c in conns]
    result = {"seen": seen, "hist": hist, "closed": closed, "late": waiting, "cpu": cpu}
    print(json.dumps(result), flush=True)
    for conn in conns:
        conn.sock.close()


# -- servers -----------------------------------------------------------------------------

ICECAST_XML = """<icecast>
  <limits><clients>30000</clients><sources>4</sources><queue-size>524288</queue-size>
    <client-timeout>30</client-timeout><header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout><burst-on-connect>1</burst-on-connect>
    <burst-size>65535</burst-size></limits>
  <authentication><source-password>hackme</source-password>
    <admin-user>admin</admin-user><admin-password>hackme</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><basedir>{dir}</basedir><logdir>{dir}</logdir><webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot><pidfile>{dir}/icecast.pid</pidfile></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog>
    <loglevel>2</loglevel><logsize>100000</logsize></logging>
  <security><chroot>0</chroot><changeowner><user>icecast2</user><group>icecast</group>
    </changeowner></security>
</icecast>
"""

MMSTREAM_TOML = """[cache]
directory = "{dir}/cache"
sync_policy = "finalize"
[server]
host = "127.0.0.1"
port = {port}
max_connections = 30000
max_connections_per_ip = 30000
idle_timeout = 3600.0
[icecast]
send_interval = {interval}
[cluster]
peers = [{peers}]
[logging]
level = "WARNING"
"""


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start_servers(
    kind: str, workdir: Path, ports: list[int], interval: float, groups: list[CpuGroup]
) -> list[subprocess.Popen[bytes]]:
    """One server, or (mmstream with several ports) one worker per port, each relaying the
    others' streams (``cluster.peers``): the first is the owner the source pushes to. With
    ``groups`` (one per port), each server runs in its own capped cgroup."""
    joins = [group.joiner() for group in groups] or [None] * len(ports)
    if len(ports) == 1:
        return [start_server(kind, workdir, ports[0], interval, join=joins[0])]
    peers = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index, port in enumerate(ports):
            (workdir / f"node-{index}").mkdir()
            node = workdir / f"node-{index}"
            procs.append(start_server(kind, node, port, interval, peers, join=joins[index]))
    except BaseException:
        stop_servers(procs)
        raise
    return procs


def stop_servers(servers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL after 10 s; a Ctrl-C meanwhile waits: none outlives the bench
    (or its cgroup)."""
    with uninterrupted():
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
        for proc in servers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_server(
    kind: str,
    workdir: Path,
    port: int,
    interval: float,
    peers: str = "",
    join: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    if kind == "icecast":
        workdir.chmod(0o777)
        config = workdir / "icecast.xml"
        config.write_text(ICECAST_XML.format(port=port, dir=workdir))
        command = [shutil.which("icecast2") or "icecast2", "-c", str(config)]
    else:
        config = workdir / "mmstream.toml"
        toml = MMSTREAM_TOML.format(port=port, dir=workdir, interval=interval, peers=peers)
        config.write_text(toml)
        command = [sys.executable, "-m", "mmstream", "serve", "--config", str(config)]
    log = (workdir / f"{kind}.out").open("wb")

    def setup() -> None:
        raise_fd_limit()
        if join is not None:
            join()

    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=setup)
    try:
        wait_port(port)
    except BaseException:
        stop_servers([proc])
        raise
    return proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    goal, running = q * total, 0
    for lag in sorted(hist):
        running += hist[lag]
        if running >= goal:
            return float(lag)
    return float(max(hist))


def spawn_listeners(
    port: int,
    path: str,
    count: int,
    until: int,
    nice: int,
    join: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """A listener process (:func:`run_listeners`) with ``count`` listeners (in the cgroup
    ``join`` moves it to)."""
    return subprocess.Popen(
        [sys.executable, __file__, "listen", str(port), path, str(count), str(until), str(nice)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=join,
    )


def measure(
    kind: str, count: int, workers: int, args: argparse.Namespace, cgroups: CpuGroups | None
) -> dict[str, object]:
    cap = CpuCap(args.worker_cpu) if cgroups is not None else None
    with tempfile.TemporaryDirectory(prefix=f"fanout-{kind}-") as tmp:
        workdir = Path(tmp)
        workers = workers if kind == "mmstream" else 1
        ports = [free_port() for _ in range(workers)]
        port = ports[0]
        groups = [cgroups.create(cap) for _ in ports] if cgroups and cap else []
        # The source and the listener processes: the weight, no cap (cpu_cap.py says why).
        generators = cgroups.create(None) if cgroups else None
        join = generators.joiner() if generators else None
        servers = start_servers(kind, workdir, ports, args.send_interval, groups)
        path = f"/streams/{STREAM_ID}" if kind == "mmstream" else f"/{STREAM_ID}"
        auth = "source:hackme" if kind == "icecast" else None
        until = now_ns() + int((60 + count / 200 + args.duration) * 1e9)  # a safety net
        clients: list[subprocess.Popen[bytes]] = []  # the source and the listener processes
        try:
            source = subprocess.Popen(
                [sys.executable, __file__, "source", str(port), path, auth or "", str(until)],
                stdout=subprocess.PIPE,
                preexec_fn=join,
            )
            clients.append(source)
            assert source.stdout is not None
            if source.stdout.readline().strip() != b"streaming":
                raise RuntimeError(f"{kind}: the source could not connect")
            time.sleep(0.3)  # the stream exists before the first listener asks
            procs = max(workers, min(args.procs, count // 50 or 1))
            shares = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
            # Spread over the workers: the owner's listeners and the relays'.
            listeners = [
                spawn_listeners(ports[i % workers], path, share, until, args.nice, join)
                for i, share in enumerate(shares)
            ]
            clients += listeners
            # Measure once every listener has data, or after a deadline (the ones without
            # data then count as not delivered to).
            pending = {p.stdout.fileno(): p for p in listeners if p.stdout is not None}
            deadline = time.monotonic() + 20 + count / 250
            while pending and time.monotonic() < deadline:
                ready, _, _ = select.select(list(pending), [], [], 1.0)
                for fd in ready:
                    line = pending.pop(fd).stdout.readline()  # type: ignore[union-attr]
                    assert line.strip() == b"ready", line
            lo = now_ns() + int(args.settle * 1e9)  # let the connection burst settle
            hi = lo + int(args.duration * 1e9)
            for p in listeners:
                assert p.stdin is not None
                p.stdin.write(f"{lo} {hi}\n".encode())
                p.stdin.flush()
            time.sleep(max(0.0, (lo - now_ns()) / 1e9))
            pids = [server.pid for server in servers]
            cpu0 = [cpu_seconds(pid) for pid in pids]
            throttled0 = [group.throttling() for group in groups]
            time.sleep(max(0.0, (hi - now_ns()) / 1e9))
            cpu1 = [cpu_seconds(pid) for pid in pids]
            throttled1 = [group.throttling() for group in groups]
            rss = sum(rss_mib(pid) for pid in pids)
            load = os.getloadavg()[0]  # other work on the machine shows in the lags
            results = [_result(p) for p in listeners]
        finally:
            with uninterrupted():
                for client in clients:
                    client.kill()
                    client.wait()
                stop_servers(servers)
                if cgroups is not None:  # this run's groups: empty now
                    cgroups.close([*groups, *([generators] if generators else [])])
            logdir = workdir if workers == 1 else workdir / "node-0"
            shutil.copy(logdir / f"{kind}.out", Path(tempfile.gettempdir()) / f"fanout-{kind}.out")
            if kind == "icecast":
                shutil.copy(
                    workdir / "error.log", Path(tempfile.gettempdir()) / "fanout-icecast.log"
                )
    expected = args.duration * 1e9 / PERIOD_NS
    seen = [s for r in results for s in r["seen"]]
    hist: dict[int, int] = {}
    by_worker: list[dict[int, int]] = [{} for _ in range(workers)]
    for index, r in enumerate(results):
        for lag, n in r["hist"].items():
            hist[int(lag)] = hist.get(int(lag), 0) + n
            mine = by_worker[index % workers]  # listener process i is on worker i % workers
            mine[int(lag)] = mine.get(int(lag), 0) + n
    full = sum(1 for s in seen if s >= expected - 1)  # the window's edges may cut one record
    return {
        "server": kind,
        "listeners": count,
        "full_delivery": full,
        "delivery": sum(seen) / (expected * count),
        "p50_ms": percentile(hist, 0.5),
        "p99_ms": percentile(hist, 0.99),
        "max_ms": float(max(hist)) if hist else float("nan"),
        # Each worker's listeners on their own: the owner's, then each relay's.
        "p99_ms_by_worker": [percentile(h, 0.99) for h in by_worker],
        "workers": workers,
        "server_cpu": (sum(cpu1) - sum(cpu0)) / args.duration,
        "busiest_worker_cpu": max(b - a for a, b in zip(cpu0, cpu1, strict=True)) / args.duration,
        "cpu_by_worker": [(b - a) / args.duration for a, b in zip(cpu0, cpu1, strict=True)],
        "server_rss_mib": rss,
        "listener_cpu_max": max(r["cpu"] for r in results) / args.duration,
        "listener_procs": len(results),
        "late": sum(r["late"] for r in results),
        "load": load,
        "send_interval": args.send_interval if kind == "mmstream" else None,
        "cpu_cap": cap.fraction if cap else None,
        # The share of CFS periods in which the most throttled server ran out of its quota.
        "throttled": max(
            (
                (t1 - t0) / max(1, p1 - p0)
                for (p0, t0), (p1, t1) in zip(throttled0, throttled1, strict=True)
            ),
            default=None,
        ),
    }


def _result(listener: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert listener.stdout is not None
    while True:
        line = listener.stdout.readline()
        if line.startswith(b"{"):
            return dict(json.loads(line))
        if not line:
            raise RuntimeError("a listener process died")


def table(rows: list[dict[str, object]]) -> str:
    out = ["| server | workers | listeners | 100% delivery | bytes delivered | lag p50 | lag p99 | lag max "
           "| server CPU | server RSS | busiest listener proc | load avg |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        out.append(
            f"| {r['server']} | {r['workers']} | {r['listeners']} | {r['full_delivery']}/{r['listeners']} "
            f"| {100 * float(r['delivery']):.2f}% | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms "
            f"| {r['max_ms']:.0f} ms | {cpu_cell(r)} "
            f"| {float(r['server_rss_mib']):.0f} MiB "
            f"| {100 * float(r['listener_cpu_max']):.0f}% of {r['listener_procs']} "
            f"| {float(r['load']):.1f} |"
        )
    return "\n".join(out)


def cpu_cell(row: dict[str, Any]) -> str:
    """Server CPU (all processes), the busiest one's, and against a cap the cap itself and the
    share of periods the most throttled server ran out of it."""
    total, busiest = 100 * row["server_cpu"], 100 * row["busiest_worker_cpu"]
    if row.get("cpu_cap") is None:
        return f"{total:.0f}% (busiest {busiest:.0f}%)"
    cap, throttled = 100 * row["cpu_cap"], 100 * row["throttled"]
    return f"{total:.0f}% (busiest {busiest:.0f}% of a {cap:.0f}% cap, throttled {throttled:.0f}%)"


def parse_runs(text: str) -> list[tuple[int, int]]:
    """``--runs``: ``W:N`` pairs (W workers, N listeners), run in the order given."""
    runs = []
    for item in text.split(","):
        workers, sep, count = item.strip().partition(":")
        if not sep or not workers.isdigit() or not count.isdigit():
            raise ValueError(f"{item!r} is not WORKERS:LISTENERS (e.g. 1:3000,2:5400)")
        if int(workers) < 1 or int(count) < 1:
            raise ValueError(f"{item!r}: workers and listeners are at least 1")
        runs.append((int(workers), int(count)))
    return runs


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that shows the parser's own one-line message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="100,1000,5000")
    parser.add_argument("--servers", default="mmstream,icecast")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--nice", type=int, default=NICE, help="listener processes' nice")
    parser.add_argument("--procs", type=int, default=4, help="listener processes")
    parser.add_argument("--send-interval", type=float, default=0.05)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="mmstream workers: the source pushes to the first, listeners spread over all, "
        "the others relay the stream (docs/scaling.md)",
    )
    parser.add_argument(
        "--runs",
        type=_argument(parse_runs),
        help="WORKERS:LISTENERS pairs run in this order (e.g. 1:3000,2:5400,1:3000,2:5400), "
        "instead of --counts and --workers",
    )
    parser.add_argument(
        "--worker-cpu",
        type=_argument(parse_fraction),
        metavar="FRACTION",
        help="cap every server process (each mmstream worker, Icecast) at this fraction of one "
        "core, each in a cgroup of its own (CFS bandwidth control; needs root): one worker and "
        "two compare like with like on a machine with fewer cores than processes",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "source":
        _, _, port, path, auth, until = sys.argv
        run_source("127.0.0.1", int(port), path, auth or None, int(until))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "listen":
        _, _, port, path, count, until, nice = sys.argv
        run_listeners("127.0.0.1", int(port), path, int(count), int(until), int(nice))
        return
    args = main_parser().parse_args()
    raise_fd_limit()
    runs = args.runs or [(args.workers, int(c)) for c in args.counts.split(",")]
    rows = []
    # SIGTERM ends the bench the way Ctrl-C does, so the servers stop and the groups go.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.ExitStack() as stack:
        try:
            cgroups = stack.enter_context(open_cpu_groups()) if args.worker_cpu else None
        except CpuCapError as error:
            raise SystemExit(f"--worker-cpu: {error}") from None
        for workers, count in runs:
            for kind in args.servers.split(","):
                if kind == "icecast" and not shutil.which("icecast2"):
                    print("icecast2 not installed: skipped (apt-get install icecast2)")
                    continue
                try:
                    row = measure(kind, count, workers, args, cgroups)
                except CpuCapError as error:
                    raise SystemExit(f"--worker-cpu: {error}") from None
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
