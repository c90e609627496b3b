"""The orchestrator: ``python -m bench [--quick] [--write-doc] [--only GROUP ...]``.

Starts every server in its own process (pinned to the server core), drives it with the load
generator in another process (pinned to the generator core), stops it by PID, and collects
everything into one results dict that :mod:`bench.report` renders.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import profile, report
from ._procs import (
    HOST,
    Cores,
    ServerProcess,
    collect,
    free_port,
    python_module,
    run_child,
    spawn_child,
)
from ._wire import WsClient

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KiB, MiB = 1024, 1024 * 1024
#: The mmstream servers' max_cache_size, and (plus headroom) the free disk a run needs.
CACHE_LIMIT_GIB = 16
#: Issue 19's clips: their size, and how many connections (threads) send them at once.
CLIP_SIZE, CLIP_CONNS = 16 * KiB, 16


@attrs.frozen
class Plan:
    """How much to measure: ``full`` for ``make bench``, ``quick`` for ``make bench-quick``."""

    mode: str
    reps: int
    chunks: tuple[int, ...]
    streams: tuple[int, ...]
    duration: float
    storage_total: int
    rr_count: int
    get_size: int
    tail_followers: tuple[int, ...]
    tail_seconds: float
    tail_rate: float
    slow_conns: int
    slow_seconds: float
    slow_smaller: int
    idle_conns: int
    all_backends: bool
    profile_seconds: float
    #: Short clips: one connection's clips in a row, each of 16 connections' clips, and
    #: how long each disk loop runs.
    clips_sequential: int
    clips_per_conn: int
    clips_disk_seconds: float
    #: The WebSocket and PUT runs take turns in this many slices each.
    clips_slices: int

    @classmethod
    def full(cls) -> Plan:
        return cls("full", 3, (4 * KiB, 64 * KiB, MiB), (1, 16), 1.0, 128 * MiB, 1000, 128 * MiB,
                   (1, 100), 3.0, 100.0, 1000, 30.0, 200, 500, True, 5.0, 300, 40, 2.0, 10)  # fmt: skip

    @classmethod
    def quick(cls) -> Plan:
        return cls("quick", 1, (4 * KiB, 64 * KiB), (1, 16), 0.25, 32 * MiB, 200, 32 * MiB,
                   (1, 100), 0.7, 100.0, 100, 2.0, 0, 100, False, 2.0, 100, 16, 0.5, 4)  # fmt: skip


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = Cores.detect()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "server_core": cores.server,
            "generator_core": cores.generator}  # fmt: skip


@attrs.frozen
class IngestTarget:
    """A running server the ingest matrix drives, with the generator spec that speaks to it."""

    name: str
    proc: ServerProcess
    base: dict[str, Any]
    chunks: tuple[int, ...]


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


@attrs.define
class Bench:
    plan: Plan
    cores: Cores
    workdir: Path
    results: dict[str, Any]

    # ------------------------------------------------------------------ plumbing

    def generate(self, spec: dict[str, Any], server: ServerProcess | None = None) -> dict[str, Any]:
        """One load-generator run; adds the server's CPU use (fraction of a core) if given."""
        cpu0 = server.cpu_seconds() if server else 0.0
        t0 = time.perf_counter()
        try:
            out = run_child("bench.loadgen", spec, cpu=self.cores.generator, timeout=600)
        except RuntimeError as exc:
            log_tail = server.tail(5).replace("\n", " | ") if server else ""
            raise RuntimeError(f"{spec['mode']} on {server.name if server else '?'}: {exc}; "
                               f"server log: {log_tail}") from exc  # fmt: skip
        wall = time.perf_counter() - t0
        if server is not None:
            out["srv_cpu"] = (server.cpu_seconds() - cpu0) / max(out.get("seconds", wall), 1e-9)
        return out

    @contextlib.contextmanager
    def server(
        self, name: str, argv: Sequence[str], port: int, health: str | None = None
    ) -> Iterator[ServerProcess]:
        proc = ServerProcess.start(name.replace(" ", "_").replace("/", "_"), argv, port,
                                   cpu=self.cores.server, log_dir=self.workdir,
                                   health=health)  # fmt: skip
        try:
            yield proc
        finally:
            proc.stop()

    def ingest(self, targets: Sequence[IngestTarget]) -> None:
        """Every (chunk, streams) cell, repetitions interleaved across servers.

        All servers are up at once and take turns, so drift on a shared machine (other jobs,
        frequency changes) hits every server of a cell alike and the ratios stay honest.
        """
        chunks = sorted({c for t in targets for c in t.chunks})
        for chunk in chunks:
            for streams in self.plan.streams:
                cell = [t for t in targets if chunk in t.chunks]
                runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in cell}
                for rep in range(self.plan.reps):
                    for t in cell:
                        spec = {**t.base, "port": t.proc.port, "chunk": chunk, "streams": streams,
                                "duration": self.plan.duration, "prefix": f"i{chunk}x{streams}r{rep}"}  # fmt: skip
                        runs[t.name].append(self.generate(spec, t.proc))
                for t in cell:
                    entry = {
                        "server": t.name,
                        "chunk": chunk,
                        "streams": streams,
                        "runs": runs[t.name],
                    }
                    self.results["ingest"].append(entry)
                    med = report.summary([r["mb_s"] for r in runs[t.name]])[0]
                    log(
                        f"  {t.name:<40} {report.size_label(chunk):>7} x{streams:<3} {med:9.1f} MB/s"
                    )

    # ------------------------------------------------------------------ baselines

    def storage(self) -> None:
        spec = {"dir": str(self.workdir / "storage"), "total": self.plan.storage_total,
                "chunks": list(self.plan.chunks)}  # fmt: skip
        merged: dict[tuple[str, str, int], list[float]] = {}
        for _ in range(self.plan.reps):
            # Pinned to the server core like the servers; then the mmap backend's flat-out
            # write once more with every core, where its prefault worker runs beside it.
            out = run_child("bench.inproc", spec, cpu=self.cores.server, timeout=600)
            rows = out["rows"]
            if self.cores.server is not None:
                spec_all = {**spec, "all_cores": True}
                rows += run_child("bench.inproc", spec_all, cpu=None, timeout=600)["rows"]
            for row in rows:
                merged.setdefault((row["op"], row["impl"], row["chunk"]), []).append(row["gib_s"])
        self.results["storage"] = [
            {"op": op, "impl": impl, "chunk": chunk, "gib_s": values}
            for (op, impl, chunk), values in merged.items()
        ]

    def start_tcp(self, stack: contextlib.ExitStack) -> list[IngestTarget]:
        port = free_port()
        argv = python_module("bench.servers", "tcp", "--port", str(port))
        proc = stack.enter_context(self.server("tcp", argv, port))
        return [IngestTarget("raw TCP", proc, {"mode": "tcp-ingest"}, (256 * KiB,))]

    def start_websocket(self, stack: contextlib.ExitStack) -> list[IngestTarget]:
        variants = [("trio-websocket default", ["trio-websocket"]),
                    ("trio-websocket 256 KiB", ["trio-websocket", "--receive-buffer", str(256 * KiB)]),
                    ("websockets", ["websockets"])]  # fmt: skip
        out = []
        for name, args in variants:
            port = free_port()
            argv = python_module("bench.servers", *args, "--port", str(port))
            proc = stack.enter_context(self.server(name, argv, port))
            base = {"mode": "ws-ingest", "path": "/", "protocol": "discard"}
            out.append(IngestTarget(name, proc, base, self.plan.chunks))
        return out

    def start_redis(self, stack: contextlib.ExitStack) -> list[IngestTarget]:
        exe = shutil.which("redis-server")
        if exe is None or importlib.util.find_spec("redis") is None:
            why = "redis-server not found (apt-get install -y redis-server)" if exe is None else \
                "redis-py not installed (pip install -e '.[bench]')"  # fmt: skip
            self.skip(f"Redis peer: {why}")
            return []
        port = free_port()
        argv = [exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--protected-mode", "no"]  # fmt: skip
        proc = stack.enter_context(self.server("redis", argv, port))
        return [IngestTarget("redis", proc, {"mode": "redis-ingest"}, self.plan.chunks)]

    def round_trips(self, targets: Sequence[IngestTarget]) -> None:
        """64 KiB request/response baselines on the servers that have one."""
        for t in targets:
            if t.name == "raw TCP":
                spec = {"mode": "tcp-rr", "port": t.proc.port, "size": 64 * KiB,
                        "count": self.plan.rr_count}  # fmt: skip
                key = "tcp_rr"
            elif t.name == "redis":
                spec = {"mode": "redis-rr", "port": t.proc.port, "size": 64 * KiB, "prefix": "rr",
                        "count": self.plan.rr_count, "stream_size": 16 * MiB}  # fmt: skip
                key = "redis_rr"
            else:
                continue
            runs = [self.generate(spec) for _ in range(self.plan.reps)]
            self.results[key] = {k: [r[k] for r in runs] for k in ("p50_us", "p99_us")}

    # ------------------------------------------------------------------ mmstream

    def mmstream_available(self) -> str | None:
        """Why mmstream cannot be measured end to end, or None when it can."""
        free = shutil.disk_usage(self.workdir).free
        if free < (CACHE_LIMIT_GIB + 4) * 1024 * MiB:
            return f"mmstream: only {free / 2**30:.0f} GiB free on the disk, {CACHE_LIMIT_GIB + 4} needed"
        probe = subprocess.run(python_module("mmstream", "serve", "--help"), capture_output=True,
                               timeout=60, check=False)  # fmt: skip
        if probe.returncode != 0:
            return "mmstream: no `mmstream serve` on this branch yet (end-to-end rows not measured)"
        return None

    def backends(self) -> list[str]:
        from mmstream.registry import BackendRegistry

        names = BackendRegistry().names()
        preferred = [n for n in ("mmap", "file") if n in names]
        return preferred if self.plan.all_backends else preferred[:1]

    def mmstream_config(
        self, port: int, transport: str, backend: str, tag: str, initial: str
    ) -> Path:
        """Defaults but for the port, a bounded cache (never fill the shared disk) and caps
        high enough for the many-connection runs."""
        cache = self.workdir / f"cache-{tag}"
        config = self.workdir / f"mmstream-{tag}.toml"
        config.write_text(
            f'[cache]\ndirectory = "{cache}"\nbackend = "{backend}"\n'
            f'max_cache_size = "{CACHE_LIMIT_GIB} GiB"\ninitial_size = "{initial}"\n\n'
            f'[server]\nhost = "{HOST}"\nport = {port}\ntransport = "{transport}"\n'
            f"max_connections = 4096\nmax_connections_per_ip = 4096\n\n"
            f'[logging]\nlevel = "WARNING"\n'
        )
        return config

    @contextlib.contextmanager
    def mmstream(
        self, transport: str, backend: str, *, initial: str = "64 MiB"
    ) -> Iterator[ServerProcess]:
        port = free_port()
        tag = f"{transport}-{backend}"
        config = self.mmstream_config(port, transport, backend, tag, initial)
        argv = python_module("mmstream", "serve", "--config", str(config))
        try:
            with self.server(f"mmstream {tag}", argv, port, health="/healthz") as proc:
                yield proc
        finally:
            shutil.rmtree(self.workdir / f"cache-{tag}", ignore_errors=True)

    def start_mmstream(self, stack: contextlib.ExitStack) -> list[IngestTarget]:
        base = {"mode": "ws-ingest", "protocol": "mmstream", "subprotocol": "mmstream.v1"}
        out = []
        for transport in ("websockets", "trio-websocket"):
            for backend in self.backends():
                name = f"mmstream {transport}/{backend}"
                proc = stack.enter_context(self.mmstream(transport, backend))
                out.append(IngestTarget(name, proc, base, self.plan.chunks))
                self.results["mmstream_servers"].append(
                    {"name": name, "transport": transport, "backend": backend}
                )
        return out

    def skip(self, why: str) -> None:
        if why not in self.results["skipped"]:
            self.results["skipped"].append(why)
            log(f"SKIP {why}")

    def mmstream_extras(self) -> None:
        """Reads, live tail, memory and many slow streams, on a fresh server per transport."""
        backend = self.backends()[0]
        for transport in ("websockets", "trio-websocket"):
            name = f"mmstream {transport}/{backend}"
            log(f"{name}: reads, tail, memory")
            extra: dict[str, Any] = {"name": name, "ingest_server": name, "memory": {}}
            # 4 MiB initial reservations: 1,000 slow streams at the default 64 MiB would
            # reserve 64 GB of disk up front (worth knowing when sizing a deployment).
            with self.mmstream(transport, backend, initial="4 MiB") as proc:
                steps: list[tuple[str, Callable[[ServerProcess, dict[str, Any]], None]]] = [
                    ("idle connections", self.idle_rss),
                    ("upload and get", self.upload_get),
                    ("range reads", self.range_reads),
                    ("live tail", self.live_tail),
                ]
                if transport == "websockets":
                    steps.append(("slow streams", self.slow_streams))
                for label, step in steps:
                    try:
                        step(proc, extra)
                        status, key = proc.status(), label.replace(" ", "_")
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                        log_tail = proc.tail(3).replace("\n", " | ")
                        self.skip(f"{name} {label}: failed: {exc} (server log: {log_tail})")
                        if proc.popen.poll() is not None:
                            break  # the server is gone: the later steps cannot run
                    else:
                        # VmHWM counts mapped cache pages (RssFile); RssAnon is the heap.
                        extra["memory"][f"hwm_after_{key}_kib"] = status["VmHWM"]
                        extra["memory"][f"anon_after_{key}_kib"] = status["RssAnon"]
                        extra["memory"]["peak_rss_kib"] = status["VmHWM"]
            self.results["mmstream_extras"].append(extra)

    def upload_get(self, proc: ServerProcess, extra: dict[str, Any]) -> None:
        """Whole-stream get throughput, and heap growth while those streams are uploaded."""
        specs = [{"port": proc.port, "subprotocol": "mmstream.v1", "prefix": f"g{rep}",
                  "stream_size": self.plan.get_size} for rep in range(self.plan.reps)]  # fmt: skip
        anon0 = proc.status()["RssAnon"]
        uploads = [self.generate({**spec, "mode": "ws-upload"}, proc) for spec in specs]
        anon1 = proc.status()["RssAnon"]
        gets = [self.generate({**spec, "mode": "ws-get"}, proc) for spec in specs]
        anon2 = proc.status()["RssAnon"]
        per_100mib = len(specs) * self.plan.get_size / (100 * MiB)
        extra["memory"]["anon_growth_per_100mib_mib"] = (anon1 - anon0) / 1024 / per_100mib
        extra["memory"]["anon_growth_during_gets_mib"] = (anon2 - anon1) / 1024
        extra["upload_1mib"] = {"mb_s": [u["mb_s"] for u in uploads]}
        extra["get"] = {"mb_s": [g["mb_s"] for g in gets]}

    def range_reads(self, proc: ServerProcess, extra: dict[str, Any]) -> None:
        runs = [self.generate({"port": proc.port, "subprotocol": "mmstream.v1", "mode": "ws-read",
                               "prefix": f"r{rep}", "size": 64 * KiB, "count": self.plan.rr_count,
                               "stream_size": 16 * MiB}, proc)
                for rep in range(self.plan.reps)]  # fmt: skip
        extra["read_rr"] = {k: [r[k] for r in runs] for k in ("p50_us", "p99_us")}

    def live_tail(self, proc: ServerProcess, extra: dict[str, Any]) -> None:
        extra["tail"] = {}
        for followers in self.plan.tail_followers:
            runs = [self.generate({"port": proc.port, "subprotocol": "mmstream.v1", "mode": "tail",
                                   "prefix": f"t{followers}r{rep}", "chunk": 4 * KiB,
                                   "followers": followers, "rate": self.plan.tail_rate,
                                   "duration": self.plan.tail_seconds}, proc)
                    for rep in range(self.plan.reps)]  # fmt: skip
            keys = ("p50_us", "p99_us", "gen_walk_p99_us")
            extra["tail"][str(followers)] = {k: [r[k] for r in runs] for k in keys}

    def slow_streams(self, proc: ServerProcess, extra: dict[str, Any]) -> None:
        """A smaller count for scale (full mode), then the issue's 1,000 real-time streams.

        The smaller run goes first: the big one leaves hundreds of streams open behind it.
        """
        for key, conns in (
            ("slow_smaller", self.plan.slow_smaller),
            ("slow", self.plan.slow_conns),
        ):
            if conns:
                extra[key] = self.generate({"port": proc.port, "subprotocol": "mmstream.v1",
                                            "mode": "slow", "prefix": key, "chunk": 4 * KiB,
                                            "conns": conns, "rate": 96_000,
                                            "duration": self.plan.slow_seconds}, proc)  # fmt: skip

    def clips(self) -> None:
        """16 KiB clips made READY through the Python client and through ``PUT``, and the
        disk's own file-plus-directory fsync rate, on one default-configuration server
        (64 MiB initial reservations unless a size says otherwise)."""
        backend = self.backends()[0]
        with self.mmstream("websockets", backend) as proc:
            runs = []
            for rep in range(self.plan.reps):
                spec = {"port": proc.port, "prefix": f"clip{rep}", "size": CLIP_SIZE,
                        "conns": CLIP_CONNS, "sequential": self.plan.clips_sequential,
                        "per_conn": self.plan.clips_per_conn,
                        "disk_seconds": self.plan.clips_disk_seconds, "slices": self.plan.clips_slices,
                        "dir": str(self.workdir / "disk-loop"), "server_pid": proc.pid}  # fmt: skip
                out = run_child("bench.clips", spec, cpu=self.cores.generator, timeout=600)
                runs.append(out)
                log(f"  clips: WS p50 {out['ws_seq']['p50_ms']:.1f} ms, PUT p50 "
                    f"{out['put_seq']['p50_ms']:.1f} ms; {CLIP_CONNS} at once: WS "
                    f"{out['ws_conc']['clips_s']:.0f}/s, PUT {out['put_conc']['clips_s']:.0f}/s, "
                    f"disk {out['disk_conc']['files_s']:.0f}/s")  # fmt: skip
        self.results["clips"] = {"server": f"mmstream websockets/{backend}", "size": CLIP_SIZE,
                                 "conns": CLIP_CONNS, "runs": runs}  # fmt: skip

    def hls(self) -> None:
        """HLS from one worker beside the progressive GET fan-out (``bench/hls.py``, which
        starts its own server): segment requests, listeners' cost, blocking-reload latency."""
        sizes = {"quick": ("3", "2", "100", "20"), "full": ("10", "10", "200", "50")}[
            self.plan.mode
        ]
        args = [f"--{k}={v}" for k, v in zip(("seconds", "minutes", "listeners", "waiters"), sizes, strict=True)]  # fmt: skip
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "hls.py"), "--json", *args],
                              capture_output=True, check=False, timeout=900, cwd=ROOT / "bench")  # fmt: skip
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            self.skip(f"hls: bench/hls.py failed: {tail}")
            return
        self.results["hls"] = {
            **json.loads(done.stdout),
            "command": f"bench/hls.py {' '.join(args)}",
        }
        live = self.results["hls"]["live"]
        log(f"  hls: reload p99 {live['reload_p99_ms']:.1f} ms, cores per 1,000: LL-HLS "
            f"{live['ll_cores_per_1000']:.2f}, GET {live['get_cores_per_1000']:.2f}")  # fmt: skip

    def profile(self) -> None:
        """py-spy samples of the mmstream server under load: the top self-time costs."""
        if profile.py_spy() is None:
            self.skip("profile: py-spy not installed (pip install -e '.[bench]')")
            return
        backend = self.backends()[0]
        seconds = self.plan.profile_seconds
        ingest = {"mode": "ws-ingest", "protocol": "mmstream", "streams": 1, "prefix": "p",
                  "duration": seconds + 1.0}  # fmt: skip
        tail = {"mode": "tail", "prefix": "pt", "chunk": 4 * KiB, "followers": 100,
                "rate": self.plan.tail_rate, "duration": seconds + 1.5}  # fmt: skip
        # 1,000 real-time streams: set-up (connect, create, append) takes seconds first.
        slow = {"mode": "slow", "prefix": "ps", "chunk": 4 * KiB, "conns": self.plan.slow_conns,
                "rate": 96_000, "duration": seconds + self.plan.slow_conns * 0.01 + 3.0}  # fmt: skip
        cases = [("websockets", "64 KiB ingest", {**ingest, "chunk": 64 * KiB}, 1.0),
                 ("websockets", "4 KiB ingest", {**ingest, "chunk": 4 * KiB}, 1.0),
                 ("trio-websocket", "64 KiB ingest", {**ingest, "chunk": 64 * KiB}, 1.0),
                 ("websockets", "live tail, 100 followers", tail, 1.0),
                 ("websockets", f"{self.plan.slow_conns} slow streams", slow,
                  self.plan.slow_conns * 0.01 + 2.0)]  # fmt: skip
        for transport, label, base, settle in cases:
            name = f"mmstream {transport}/{backend}, {label}"
            log(f"profile: {name}")
            out = RESULTS / f"profile-{transport}-{label.split(',')[0].replace(' ', '-')}.txt"
            with self.mmstream(transport, backend, initial="4 MiB") as proc:
                spec = {**base, "port": proc.port, "subprotocol": "mmstream.v1"}
                gen = spawn_child("bench.loadgen", spec, cpu=self.cores.generator)
                time.sleep(settle)  # past the generator's start-up and set-up
                try:
                    profile.record(proc.pid, seconds, out)
                finally:
                    load = collect(gen, "bench.loadgen", timeout=seconds + 120)
            samples, costs = profile.top_costs(out.read_text())
            self.results["profile"].append({"name": name, "samples": samples,
                                            "mb_s": load.get("mb_s", math.nan),
                                            "raw": str(out.relative_to(ROOT)),
                                            "top": [attrs.asdict(c) for c in costs]})  # fmt: skip

    def idle_rss(self, proc: ServerProcess, extra: dict[str, Any]) -> None:
        """RSS per idle connection: handshaken WebSocket connections that then say nothing."""
        warm = WsClient.connect(HOST, proc.port, "/v1/streams/idle-warm")
        warm.close()
        before = proc.status()
        clients = [WsClient.connect(HOST, proc.port, f"/v1/streams/idle-{i}")
                   for i in range(self.plan.idle_conns)]  # fmt: skip
        time.sleep(0.2)  # let the server finish the per-connection setup that follows the 101
        after = proc.status()
        for c in clients:
            c.close()
        extra["memory"].update({"idle_conns": len(clients), "rss_before_idle_kib": before["VmRSS"],
                                "rss_per_idle_conn_kib": (after["VmRSS"] - before["VmRSS"]) / len(clients)})  # fmt: skip


STARTERS: dict[str, Callable[[Bench, contextlib.ExitStack], list[IngestTarget]]] = {
    "tcp": Bench.start_tcp,
    "websocket": Bench.start_websocket,
    "redis": Bench.start_redis,
    "mmstream": Bench.start_mmstream,
}
GROUPS = ["storage", *STARTERS, "mmstream-extras", "clips", "hls", "profile"]
NEEDS_MMSTREAM = {"mmstream", "mmstream-extras", "clips", "hls", "profile"}
#: Quick mode leaves out the profile (py-spy needs seconds of samples to say anything).
QUICK_GROUPS = [g for g in GROUPS if g != "profile"]


def run_groups(bench: Bench, groups: Sequence[str]) -> None:
    unavailable = bench.mmstream_available()
    if unavailable and any(g in NEEDS_MMSTREAM for g in groups):
        bench.skip(unavailable)
        groups = [g for g in groups if g not in NEEDS_MMSTREAM]
    if "storage" in groups:
        log("storage (in-process)")
        bench.storage()
    with contextlib.ExitStack() as stack:
        targets = [t for g in groups if g in STARTERS for t in STARTERS[g](bench, stack)]
        if targets:
            log(f"ingest: {', '.join(t.name for t in targets)} (interleaved)")
            bench.ingest(targets)
            bench.round_trips(targets)
            for server in bench.results["mmstream_servers"]:
                proc = next(t.proc for t in targets if t.name == server["name"])
                with contextlib.suppress(RuntimeError):  # a dead server has no peak to report
                    server["peak_rss_kib"] = proc.status()["VmHWM"]
    if "mmstream-extras" in groups:
        bench.mmstream_extras()
    if "clips" in groups:
        log("clips: 16 KiB, WebSocket and PUT, and the disk loop")
        bench.clips()
    if "hls" in groups:
        log("hls: segments, LL-HLS and progressive GET listeners, blocking reloads")
        bench.hls()
    if "profile" in groups:
        bench.profile()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="one repetition, fewer sizes (< 1 min)"
    )
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups")
    parser.add_argument("--write-doc", action="store_true",
                        help="update the generated block of docs/performance.md")  # fmt: skip
    parser.add_argument("--render", type=Path, help="re-render a saved results JSON and exit")
    args = parser.parse_args(argv)
    if args.render:
        table = report.render(json.loads(args.render.read_text()))
        print(table)
        if args.write_doc:
            report.update_doc(ROOT / "docs" / "performance.md", table)
        return 0
    plan = Plan.quick() if args.quick else Plan.full()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results: dict[str, Any] = {"started": started, "mode": plan.mode, "machine": machine(),
                               "plan": attrs.asdict(plan), "ingest": [], "skipped": [],
                               "mmstream_servers": [], "mmstream_extras": [], "profile": [],
                               "loadavg_before": os.getloadavg()}  # fmt: skip
    cores = Cores.detect()
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="work-", dir=RESULTS) as tmp:
        bench = Bench(plan, cores, Path(tmp), results)
        if cores.server is None:
            bench.skip("pinning: fewer than two usable cores, nothing pinned")
        try:
            run_groups(bench, args.only or (QUICK_GROUPS if args.quick else GROUPS))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            bench.skip(f"aborted: {exc}")
            status = 1
        else:
            status = 0
    results["seconds"] = time.perf_counter() - t0
    results["loadavg_after"] = os.getloadavg()
    table = report.render(results)
    print(table)
    path = report.write_json(results, RESULTS)
    log(f"results: {path.relative_to(ROOT)} ({results['seconds']:.0f} s)")
    if args.write_doc:
        report.update_doc(ROOT / "docs" / "performance.md", table)
    return status
