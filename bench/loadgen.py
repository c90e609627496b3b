"""The load generator: ``python -m bench.loadgen '<spec json>'`` prints one JSON result.

It runs in its own process, pinned to a core the server does not use. Frames are built and
masked before the clock starts and written as large blobs straight to raw sockets, so the
generator's cost per byte is one ``sendall``; it reports its own CPU use (``gen_cpu``, the
fraction of one core) so a saturated generator is visible in the results.

Modes (``spec["mode"]``): the keys of :data:`MODES`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import selectors
import socket
import statistics
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WsClient,
    client_frame,
    prebuilt_frames,
)

Spec = dict[str, Any]
Result = dict[str, Any]

HOST = "127.0.0.1"


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _percentiles_us(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_us": float("nan"), "p99_us": float("nan"), "samples": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    return {"p50_us": pick(0.50), "p99_us": pick(0.99), "samples": len(ordered)}


# --------------------------------------------------------------------------- mmstream protocol


class Session:
    """One connection speaking mmstream protocol v1 (or the discard servers' subset)."""

    def __init__(self, spec: Spec, stream_id: str) -> None:
        path = spec.get("path", "/v1/streams/{id}").format(id=stream_id)
        self.ws = WsClient.connect(HOST, spec["port"], path, subprotocol=spec.get("subprotocol"))
        self.stream_id = stream_id
        self._next_id = 0

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        self.ws.send_json({"op": op, "id": self._next_id, **fields})
        reply = self.ws.reply_to(self._next_id)
        if not reply.get("ok"):
            raise RuntimeError(f"{op} failed: {reply.get('error')}")
        return reply

    def wait_ack(self, offset: int) -> None:
        """Wait for an ``ack`` event covering ``offset`` (acks are coalesced, every ≤ 50 ms)."""
        for _ in range(100_000_000):
            msg = self.ws.recv_json()
            if msg.get("op") == "ack" and msg.get("offset", 0) >= offset:
                return
            if msg.get("op") == "error":
                raise RuntimeError(f"upload failed: {msg.get('error')}")

    def start_upload(self) -> None:
        self.request("create", content_type="audio/mpeg")
        self.request("append")

    def upload(self, total: int, chunk: int) -> None:
        """Upload ``total`` bytes (rounded up to whole chunks) and wait for ``sync``."""
        blob, frames = prebuilt_frames(chunk)
        per_blob = frames * chunk
        for _ in range(-(-total // per_blob)):
            self.ws.sock.sendall(blob)
        self.request("sync")


def _ingest_worker(
    spec: Spec, index: int, barrier: threading.Barrier, out: list[Any], deadline: list[float]
) -> None:
    """One stream: set up, wait for the common start, send blobs until the deadline, sync."""
    try:
        chunk = spec["chunk"]
        blob, frames = prebuilt_frames(chunk)
        session = Session(spec, f"{spec.get('prefix', 'bench')}-{index}")
        if spec.get("protocol") == "mmstream":
            session.start_upload()
        barrier.wait()
        sent = 0
        sock = session.ws.sock
        end = deadline[1]
        for _ in range(10_000_000):
            sock.sendall(blob)
            sent += frames
            if time.perf_counter() >= end:
                break
        total = sent * chunk
        if spec.get("protocol") == "mmstream":
            # Done when acknowledged (written, readable): durability is `sync`'s separate job.
            session.wait_ack(total)
            done = time.perf_counter()
            size = session.request("stat")["stat"]["size"]
        else:
            reply = session.request("sync")
            done = time.perf_counter()
            size = reply["bytes"]
        if size != total:
            raise RuntimeError(f"server holds {size} bytes, {total} were sent")
        out[index] = (sent, done)
        if spec.get("protocol") == "mmstream":
            session.request("delete")  # give the disk back before the next run
        session.ws.close()
    except BaseException as exc:
        out[index] = exc
        barrier.abort()


def _tcp_worker(
    spec: Spec, index: int, barrier: threading.Barrier, out: list[Any], deadline: list[float]
) -> None:
    try:
        blob = os.urandom(max(256 * 1024, spec["chunk"]))
        sock = socket.create_connection((HOST, spec["port"]))
        sock.sendall(b"D")
        barrier.wait()
        sent = 0
        end = deadline[1]
        for _ in range(10_000_000):
            sock.sendall(blob)
            sent += len(blob)
            if time.perf_counter() >= end:
                break
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 8 and (more := sock.recv(8)):
            reply += more
        (received,) = struct.unpack("!Q", reply)
        if received != sent:
            raise RuntimeError(f"server counted {received} bytes, sent {sent}")
        out[index] = (sent, time.perf_counter())
        sock.close()
    except BaseException as exc:
        out[index] = exc
        barrier.abort()


def run_parallel(
    spec: Spec,
    worker: Callable[[Spec, int, threading.Barrier, list[Any], list[float]], None],
    unit_bytes: int,
) -> Result:
    """``streams`` workers start together and send for ``duration`` s; totals over all of them."""
    streams: int = spec["streams"]
    clock = [0.0, 0.0, 0.0]  # start time, deadline, CPU at start

    def go() -> None:
        """Runs once, before any waiter is released: the clock starts for everyone at once."""
        clock[0] = time.perf_counter()
        clock[1] = clock[0] + spec["duration"]
        clock[2] = _cpu()

    barrier = threading.Barrier(streams + 1, action=go)
    out: list[Any] = [None] * streams
    threads = [
        threading.Thread(target=worker, args=(spec, i, barrier, out, clock), daemon=True)
        for i in range(streams)
    ]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=60)
    t0, cpu0 = clock[0], clock[2]
    for t in threads:
        t.join(timeout=spec["duration"] + 120)
    cpu1 = _cpu()
    errors = [o for o in out if isinstance(o, BaseException) or o is None]
    if errors:
        raise RuntimeError(f"{len(errors)} of {streams} streams failed: {errors[0]!r}")
    units = sum(o[0] for o in out)
    elapsed = max(o[1] for o in out) - t0
    total = units * unit_bytes
    return {
        "bytes": total,
        "seconds": elapsed,
        "mb_s": total / elapsed / 1e6,
        "msg_s": total / spec["chunk"] / elapsed,
        "gen_cpu": (cpu1 - cpu0) / elapsed,
    }


# --------------------------------------------------------------------------- round trips


def tcp_rr(spec: Spec) -> Result:
    size, count = spec["size"], spec["count"]
    sock = socket.create_connection((HOST, spec["port"]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"R")
    buf = bytearray(size)
    view = memoryview(buf)
    samples: list[float] = []
    for i in range(count + 20):
        t0 = time.perf_counter()
        sock.sendall(struct.pack("!I", size))
        got = 0
        while got < size:
            n = sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("server closed")
            got += n
        if i >= 20:
            samples.append(time.perf_counter() - t0)
    sock.close()
    return _percentiles_us(samples)


def _read_exact_binary(ws: WsClient, length: int) -> None:
    """Consume binary frames until ``length`` payload bytes arrived (whole frames counted)."""
    got = 0
    if length == 0:
        return
    for frame in ws.frames():
        if frame.opcode in (OP_BINARY, OP_CONT):
            got += frame.length
            if got >= length:
                return


def _prepared_session(spec: Spec, stream_id: str, size: int) -> Session:
    session = Session(spec, stream_id)
    session.start_upload()
    session.upload(size, 1 << 20)
    return session


def ws_read(spec: Spec) -> Result:
    """Round trip of ``read`` requests of ``size`` bytes at random offsets of a filled stream."""
    size, count, stream_size = spec["size"], spec["count"], spec["stream_size"]
    session = _prepared_session(spec, f"{spec['prefix']}-read", stream_size)
    rng = random.Random(5)
    samples: list[float] = []
    ws = session.ws
    for i in range(count + 20):
        offset = rng.randrange(0, stream_size - size)
        t0 = time.perf_counter()
        session._next_id += 1
        ws.send_json({"op": "read", "id": session._next_id, "offset": offset, "length": size})
        reply = ws.reply_to(session._next_id)
        if not reply.get("ok"):
            raise RuntimeError(f"read failed: {reply}")
        _read_exact_binary(ws, reply.get("length", size))
        if i >= 20:
            samples.append(time.perf_counter() - t0)
    session.request("delete")
    ws.close()
    return _percentiles_us(samples)


def ws_upload(spec: Spec) -> Result:
    """Fill one stream of ``stream_size`` bytes in 1 MiB frames (a ``ws-get`` reads it later)."""
    t0 = time.perf_counter()
    session = _prepared_session(spec, f"{spec['prefix']}-get", spec["stream_size"])
    elapsed = time.perf_counter() - t0
    session.ws.close()
    return {"bytes": spec["stream_size"], "seconds": elapsed,
            "mb_s": spec["stream_size"] / elapsed / 1e6}  # fmt: skip


def ws_get(spec: Spec) -> Result:
    """Whole-stream read throughput: one ``read`` of the entire stream ``ws-upload`` filled."""
    stream_size = spec["stream_size"]
    session = Session(spec, f"{spec['prefix']}-get")
    ws = session.ws
    cpu0, t0 = _cpu(), time.perf_counter()
    session._next_id += 1
    ws.send_json({"op": "read", "id": session._next_id, "offset": 0, "length": stream_size})
    reply = ws.reply_to(session._next_id)
    if not reply.get("ok"):
        raise RuntimeError(f"read failed: {reply}")
    length = reply.get("length", stream_size)
    _read_exact_binary(ws, length)
    elapsed = time.perf_counter() - t0
    cpu1 = _cpu()
    session.request("delete")
    ws.close()
    return {"bytes": length, "seconds": elapsed, "mb_s": length / elapsed / 1e6,
            "gen_cpu": (cpu1 - cpu0) / elapsed}  # fmt: skip


# --------------------------------------------------------------------------- event loops


class _Conn:
    """A non-blocking connection in the single-threaded loops (tail, slow).

    What the socket does not take at once waits in ``pending``, a queue of whole frames sent
    with ``sendmsg`` (no copying of the backlog, however long it grows).
    """

    def __init__(self, session: Session, index: int = 0) -> None:
        self.session = session
        self.index = index
        self.sock = session.ws.sock
        self.sock.setblocking(False)
        self.reader = session.ws.reader
        self.acked = 0
        self.sent = 0
        self.pending: deque[memoryview] = deque()

    def drain(self) -> None:
        """Read what arrived: count binary bytes, note acks, answer pings."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                raise ConnectionError("server closed a connection")
            for frame in self.reader.feed(data):
                if frame.opcode == OP_TEXT:
                    msg = json.loads(frame.data)
                    if msg.get("op") == "ack":
                        self.acked = max(self.acked, int(msg.get("offset", 0)))
                    elif msg.get("op") == "error" or msg.get("ok") is False:
                        raise RuntimeError(f"server error: {msg}")
                elif frame.opcode == OP_PING:
                    self.send(client_frame(OP_PONG, frame.data))
                elif frame.opcode == OP_CLOSE:
                    raise ConnectionError(f"server closed a connection: {frame.data!r}")

    def send(self, data: bytes) -> None:
        """Queue and write without blocking; what the socket refuses stays in ``pending``."""
        self.pending.append(memoryview(data))
        if len(self.pending) == 1:
            self.flush()

    def flush(self) -> None:
        """Write queued frames until the socket is full (then wait for it to be writable)."""
        pending = self.pending
        while pending:
            try:
                n = self.sock.sendmsg(list(itertools.islice(pending, 64)))
            except BlockingIOError:
                return
            while n and pending:
                head = pending[0]
                if n >= len(head):
                    n -= len(head)
                    pending.popleft()
                else:
                    pending[0] = head[n:]
                    n = 0


def tail(spec: Spec) -> Result:
    """Delay from a chunk's write (send) to its delivery to every follower."""
    chunk, followers, rate, duration = (
        spec["chunk"],
        spec["followers"],
        spec["rate"],
        spec["duration"],
    )
    stream_id = f"{spec['prefix']}-tail"
    writer = Session(spec, stream_id)
    writer.start_upload()
    conns: list[_Conn] = []
    for _ in range(followers):
        follower = Session(spec, stream_id)
        follower.request("tail", offset=0)
        conns.append(_Conn(follower, len(conns)))
    wconn = _Conn(writer)
    frame = client_frame(OP_BINARY, os.urandom(chunk))
    sel = selectors.DefaultSelector()
    for c in [*conns, wconn]:
        sel.register(c.sock, selectors.EVENT_READ, c)
    sent_at: list[float] = []
    delivered = [0] * followers  # chunks each follower has fully received
    samples: list[float] = []
    walks: list[float] = []
    period = 1.0 / rate
    n_chunks = max(1, int(duration * rate))
    start = time.perf_counter()
    cpu0 = _cpu()
    end_by = start + duration + 10.0
    for _ in range(10_000_000):
        now = time.perf_counter()
        if len(sent_at) < n_chunks and now >= start + len(sent_at) * period:
            sent_at.append(time.perf_counter())
            wconn.send(frame)
        if all(d >= n_chunks for d in delivered) or now > end_by:
            break
        next_due = start + len(sent_at) * period if len(sent_at) < n_chunks else now + 0.05
        ready = sel.select(max(0.0, next_due - time.perf_counter()))
        woke = time.perf_counter()
        for key, _ in ready:
            c: _Conn = key.data
            c.drain()
            if c is wconn:
                continue
            got = c.reader.binary_bytes // chunk
            arrived = time.perf_counter()
            for k in range(delivered[c.index], min(got, len(sent_at))):
                samples.append(arrived - sent_at[k])
            delivered[c.index] = max(delivered[c.index], got)
        if ready:
            # The generator's own share of the delay: walking the ready sockets one by one.
            walks.append(time.perf_counter() - woke)
        wconn.flush()
    cpu1 = _cpu()
    missing = sum(max(0, n_chunks - d) for d in delivered)
    for c in [*conns, wconn]:
        c.sock.close()
    elapsed = time.perf_counter() - start
    walk = _percentiles_us(walks)
    return {**_percentiles_us(samples), "missing": missing, "gen_cpu": (cpu1 - cpu0) / elapsed,
            "gen_walk_p99_us": walk["p99_us"]}  # fmt: skip


def slow(spec: Spec) -> Result:
    """Many connections each sending ``rate`` bytes/s in ``chunk``-byte frames, for ``duration``.

    A connection the server drops (e.g. its keepalive ping went unanswered because our pong
    sat behind seconds of backlog) is counted in ``dropped`` and the run goes on without it.
    """
    chunk, n, rate, duration = spec["chunk"], spec["conns"], spec["rate"], spec["duration"]
    t_setup = time.perf_counter()
    conns = []
    for i in range(n):
        session = Session(spec, f"{spec['prefix']}-slow-{i}")
        session.start_upload()
        conns.append(_Conn(session, i))
    setup_s = time.perf_counter() - t_setup
    frame = client_frame(OP_BINARY, os.urandom(chunk))
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    live = set(range(n))
    errors: list[str] = []

    def guarded(c: _Conn, action: Callable[[], None]) -> None:
        if c.index not in live:
            return
        try:
            action()
        except (OSError, ConnectionError, RuntimeError) as exc:
            live.discard(c.index)
            sel.unregister(c.sock)
            c.sock.close()
            errors.append(repr(exc))

    writing: set[int] = set()

    def watch(c: _Conn) -> None:
        """Wait for writability only while frames are queued (a full socket: backlog)."""
        if c.index not in live:
            return
        if c.pending and c.index not in writing:
            writing.add(c.index)
            sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        elif not c.pending and c.index in writing:
            writing.discard(c.index)
            sel.modify(c.sock, selectors.EVENT_READ, c)

    def poll(timeout: float) -> None:
        """Read what arrived; write queued frames where the socket has room again."""
        for key, events in sel.select(timeout):
            c: _Conn = key.data
            if events & selectors.EVENT_READ:
                guarded(c, c.drain)
            if events & selectors.EVENT_WRITE:
                guarded(c, c.flush)
            watch(c)

    step = chunk / rate / n  # one send every `step` seconds, round-robin over connections
    total_sends = int(duration / step)
    start = time.perf_counter()
    cpu0 = _cpu()
    max_lag = 0.0
    max_backlog = 0
    samples: list[float] = []  # the worst connection's backlog (s), once a second
    next_sample = start + 1.0
    j = 0
    for _ in range(100_000_000):
        now = time.perf_counter()
        while j < total_sends and now >= start + j * step:
            c = conns[j % n]
            max_lag = max(max_lag, now - (start + j * step))
            if c.index in live:
                guarded(c, lambda c=c: c.send(frame))
                c.sent += chunk
                watch(c)
            j += 1
        if now >= next_sample:
            behind = [conns[i].sent - conns[i].acked for i in live]
            max_backlog = max(max_backlog, sum(behind))
            samples.append(max(behind, default=0) / rate)
            next_sample += 1.0
        if j >= total_sends:
            break
        poll(max(0.0, start + j * step - time.perf_counter()))
    end_send = time.perf_counter()
    cpu1 = _cpu()
    backlogs = [(conns[i].sent - conns[i].acked) / rate for i in live]
    backlog_at_end = sum(conns[i].sent - conns[i].acked for i in live)
    # Drain: the time until the server has acknowledged every byte (bounded).
    drain_deadline = end_send + 30.0
    while time.perf_counter() < drain_deadline and any(
        conns[i].acked < conns[i].sent for i in live
    ):
        poll(0.05)
    drain_s = time.perf_counter() - end_send
    unacked = sum(conns[i].sent - conns[i].acked for i in live)
    for i in live:
        conns[i].sock.close()
    return {
        "conns": n,
        "dropped": n - len(live),
        "first_drop": errors[0] if errors else "",
        "seconds": end_send - start,
        "setup_s": setup_s,
        "bytes": sum(c.sent for c in conns),
        "gen_max_lag_s": max_lag,
        "gen_cpu": (cpu1 - cpu0) / (end_send - start),
        "max_backlog_bytes": max_backlog,
        "backlog_at_end_bytes": backlog_at_end,
        "worst_conn_backlog_s": max(backlogs, default=math.inf),
        "median_conn_backlog_s": statistics.median(backlogs) if backlogs else math.inf,
        "worst_conn_backlog_samples_s": samples,
        "drain_s": drain_s,
        "unacked_after_drain": unacked,
    }


# --------------------------------------------------------------------------- redis peer


def _redis_worker(
    spec: Spec, index: int, barrier: threading.Barrier, out: list[Any], deadline: list[float]
) -> None:
    try:
        import redis

        chunk = spec["chunk"]
        value = os.urandom(chunk)
        per_batch = max(1, (256 * 1024) // chunk)
        client = redis.Redis(host=HOST, port=spec["port"])
        key = f"{spec.get('prefix', 'bench')}-{index}"
        client.delete(key)
        barrier.wait()
        sent = 0
        end = deadline[1]
        for _ in range(10_000_000):
            pipe = client.pipeline(transaction=False)
            for _ in range(per_batch):
                pipe.append(key, value)
            pipe.execute()
            sent += per_batch
            if time.perf_counter() >= end:
                break
        out[index] = (sent, time.perf_counter())
        client.delete(key)
        client.close()
    except BaseException as exc:
        out[index] = exc
        barrier.abort()


def redis_rr(spec: Spec) -> Result:
    import redis

    size, count, stream_size = spec["size"], spec["count"], spec["stream_size"]
    client = redis.Redis(host=HOST, port=spec["port"])
    key = f"{spec['prefix']}-rr"
    client.delete(key)
    block = os.urandom(1 << 20)
    pipe = client.pipeline(transaction=False)
    for _ in range(stream_size >> 20):
        pipe.append(key, block)
    pipe.execute()
    rng = random.Random(5)
    samples: list[float] = []
    for i in range(count + 20):
        offset = rng.randrange(0, stream_size - size)
        t0 = time.perf_counter()
        data = client.getrange(key, offset, offset + size - 1)
        if i >= 20:
            samples.append(time.perf_counter() - t0)
        if len(data) != size:
            raise RuntimeError("short GETRANGE")
    client.delete(key)
    client.close()
    return _percentiles_us(samples)


MODES: dict[str, Callable[[Spec], Result]] = {
    "tcp-ingest": lambda spec: run_parallel(spec, _tcp_worker, 1),
    "ws-ingest": lambda spec: run_parallel(spec, _ingest_worker, spec["chunk"]),
    "redis-ingest": lambda spec: run_parallel(spec, _redis_worker, spec["chunk"]),
    "tcp-rr": tcp_rr,
    "ws-read": ws_read,
    "ws-upload": ws_upload,
    "ws-get": ws_get,
    "redis-rr": redis_rr,
    "tail": tail,
    "slow": slow,
}


def run(spec: Spec) -> Result:
    mode = MODES.get(spec["mode"])
    if mode is None:
        raise ValueError(f"unknown mode {spec['mode']!r}; known: {', '.join(MODES)}")
    return mode(spec)


def main() -> None:
    result = run(json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
