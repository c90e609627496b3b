"""Scale-out benchmark: ingest through HAProxy with 1 and 2 workers, judged per CPU-second.

    python bench/scaleout.py [--total 1GiB] [--streams 32] [--repeat 3] [--json PATH]

On a small shared machine wall-clock throughput says more about who got the cores than about
scaling, so every process's CPU time is read from ``/proc/PID/stat`` (utime + stime, all
threads) before and after the upload phase. The figures:

- bytes ingested per worker CPU-second, with 1 worker and with 2 (target: 2 workers >= 0.9 x
  1 worker, i.e. adding a worker adds capacity without adding overhead);
- HAProxy's CPU-seconds per GB forwarded, beside the CPU-seconds per GB a node and the load
  generator spend, through HAProxy and over a direct connection.

The load generator runs as separate processes (``loadgen`` below), two or one per worker,
each uploading its share of the streams over four concurrent connections. On a 2-core machine the load
generators, HAProxy and the workers all compete for the same two cores: aggregate MB/s is
reported, but it measures the machine, not mmstream.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from _procs import free_ports  # run as `python bench/scaleout.py`: bench/ is on sys.path

from mmstream.config import parse_size
from mmstream.scaleout import (
    BalancerOptions,
    Child,
    Endpoint,
    RestartPolicy,
    Supervisor,
    Worker,
    render_haproxy_config,
    serve_argv,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
GB = 1e9


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far: user, nice, system, irq and softirq from
    /proc/stat's cpu line (not idle, iowait or the hypervisor's steal)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


# ------------------------------------------------------------------ load generator process


async def _loadgen(url: str, streams: Sequence[str], size: int, concurrency: int) -> None:
    from mmstream.client import connect

    block = os.urandom(size)
    limiter = trio.CapacityLimiter(concurrency)

    async def one(stream: str) -> None:
        async with limiter, connect(url, stream=stream) as client:
            await client.create(stream)
            await client.append(stream, block)
            await client.finalize(stream, size=size)

    started, cpu = time.time(), time.process_time()
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(one, stream)
    report = {"start": started, "end": time.time(), "bytes": size * len(streams)}
    total = time.process_time()  # since the process started, imports included
    print(json.dumps({**report, "cpu_s": total - cpu, "cpu_total_s": total}))


# ------------------------------------------------------------------ one measured run


def _report(line: str) -> None:
    print(f"  [{line}]", file=sys.stderr)


async def measure(
    workers: int, *, via_haproxy: bool, total: int, streams: int, tmp: Path, tag: str
) -> dict[str, Any]:
    """Start ``workers`` nodes (and HAProxy), upload ``total`` bytes in ``streams`` streams
    from ``workers`` load-generator processes, and return CPU and wall figures."""
    haproxy = shutil.which("haproxy")
    if via_haproxy and haproxy is None:
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    *ports, lb_port = free_ports(workers + 1)
    plan = [
        Worker(i, Endpoint("127.0.0.1", p), tmp / tag / f"node-{i}") for i, p in enumerate(ports)
    ]
    children = [
        Child(w.node.name, serve_argv(w, log_level="WARNING"), w.node.endpoint) for w in plan
    ]
    bind = Endpoint("127.0.0.1", lb_port)
    if via_haproxy:
        assert haproxy is not None
        config = tmp / f"{tag}.cfg"
        config.write_text(render_haproxy_config([w.node for w in plan], BalancerOptions(bind=bind)))
        children.append(
            Child("haproxy", (haproxy, "-db", "-f", str(config)), bind, after_others=True)
        )
    supervisor = Supervisor(children, RestartPolicy(restart=False), report=_report)
    size = total // streams
    ids = [f"{tag}-{i:03d}" for i in range(streams)]
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            await trio.sleep(2.5 if via_haproxy else 0.2)  # HAProxy: rise 2 x inter 1s
            pids = {c.name: supervisor.pid(c.name) for c in children}
            before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
            machine_before, window_start = machine_cpu_seconds(), time.monotonic()
            self_before = cpu_seconds(os.getpid())
            # At least two load generators in every configuration, so that the runs with one
            # and with two workers have as many busy processes as possible in common.
            gens = max(2, workers)
            urls = (
                [f"ws://{bind}"] * gens
                if via_haproxy
                else [f"ws://{plan[i % workers].node.endpoint}" for i in range(gens)]
            )
            argv = [sys.executable, __file__, "loadgen", "--size", str(size), "--concurrency", "4"]
            procs = [
                await trio.lowlevel.open_process(
                    [*argv, "--url", urls[g], *ids[g::gens]], stdout=subprocess.PIPE
                )
                for g in range(gens)
            ]
            outputs = []
            for proc in procs:
                assert proc.stdout is not None
                data = b""
                while chunk := await proc.stdout.receive_some():
                    data += chunk
                if await proc.wait() != 0:
                    raise SystemExit(f"load generator failed ({proc.returncode})")
                outputs.append(json.loads(data))
            after = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
            machine_cpu = machine_cpu_seconds() - machine_before
            window = time.monotonic() - window_start
            self_cpu = cpu_seconds(os.getpid()) - self_before
        finally:
            supervisor.stop()
    wall = max(o["end"] for o in outputs) - min(o["start"] for o in outputs)
    ingested = sum(o["bytes"] for o in outputs)
    cpu = {name: after[name] - before[name] for name in before}
    worker_cpu = sum(v for k, v in cpu.items() if k.startswith("node-"))
    ours = sum(cpu.values()) + sum(o["cpu_total_s"] for o in outputs) + self_cpu
    return {
        "workers": workers,
        "via_haproxy": via_haproxy,
        "bytes": ingested,
        "wall_s": wall,
        "mb_per_s": ingested / wall / 1e6,
        "worker_cpu_s": worker_cpu,
        "bytes_per_worker_cpu_s": ingested / worker_cpu,
        "haproxy_cpu_s_per_gb": cpu.get("haproxy", 0.0) / (ingested / GB),
        "worker_cpu_s_per_gb": worker_cpu / (ingested / GB),
        "loadgen_cpu_s_per_gb": sum(o["cpu_s"] for o in outputs) / (ingested / GB),
        # CPU the rest of the machine (other people's jobs) used meanwhile: the noise level.
        "others_cpu_s_per_wall_s": max(0.0, machine_cpu - ours) / window,
        "per_worker_share": {
            k: round(v / worker_cpu, 3) for k, v in cpu.items() if k.startswith("node-")
        },
    }


# ------------------------------------------------------------------ the whole benchmark

CONFIGS = {"direct-1": (1, False), "haproxy-1": (1, True), "haproxy-2": (2, True)}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    numeric = [k for k, v in runs[0].items() if isinstance(v, float)]
    merged = dict(runs[0])
    for key in numeric:
        merged[key] = statistics.median(r[key] for r in runs)
    merged["runs"] = len(runs)
    merged["bytes_per_worker_cpu_s_each_run"] = [r["bytes_per_worker_cpu_s"] for r in runs]
    return merged


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    configs = dict(CONFIGS)
    for n in range(3, (os.cpu_count() or 1) + 1):
        configs[f"haproxy-{n}"] = (n, True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mmstream-bench-") as tmp:
        for rep in range(args.repeat):
            for name, (workers, via) in configs.items():
                print(f"{name} run {rep + 1}/{args.repeat}", file=sys.stderr)
                run = await measure(
                    workers,
                    via_haproxy=via,
                    total=args.total,
                    streams=args.streams,
                    tmp=Path(tmp),
                    tag=f"{name}-r{rep}",
                )
                results.setdefault(name, []).append(run)
                shutil.rmtree(Path(tmp) / f"{name}-r{rep}", ignore_errors=True)
    summary = {name: _median_run(runs) for name, runs in results.items()}
    one, two = summary["haproxy-1"], summary["haproxy-2"]
    return {
        "machine": {"cpus": os.cpu_count(), "haproxy": _haproxy_version()},
        "total_bytes": args.total,
        "streams": args.streams,
        "configs": summary,
        "scaling_2_vs_1": two["bytes_per_worker_cpu_s"] / one["bytes_per_worker_cpu_s"],
    }


def _haproxy_version() -> str | None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        return None
    out = subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0]


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'config':<10} {'MB/s':>7} {'MB/worker-CPU-s':>16} {'worker CPU-s/GB':>16} "
        f"{'HAProxy CPU-s/GB':>17} {'loadgen CPU-s/GB':>17}"
    )
    for name, r in result["configs"].items():
        print(
            f"{name:<10} {r['mb_per_s']:>7.0f} {r['bytes_per_worker_cpu_s'] / 1e6:>16.0f} "
            f"{r['worker_cpu_s_per_gb']:>16.2f} {r['haproxy_cpu_s_per_gb']:>17.2f} "
            f"{r['loadgen_cpu_s_per_gb']:>17.2f}"
        )
    for name, r in result["configs"].items():
        each = ", ".join(f"{v / 1e6:.0f}" for v in r["bytes_per_worker_cpu_s_each_run"])
        print(
            f"{name:<10} MB per worker CPU-s in each run: {each}; "
            f"other jobs on the machine used {r['others_cpu_s_per_wall_s']:.2f} CPUs meanwhile"
        )
    ratio = result["scaling_2_vs_1"]
    verdict = "meets" if ratio >= 0.9 else "misses"
    print(f"bytes per worker CPU-second, 2 workers vs 1: {ratio:.2f} ({verdict} the 0.9 target)")
    print(
        f"{result['machine']['cpus']} CPUs: the load generators, HAProxy and the workers "
        "share them, so MB/s measures the machine; the per-CPU-second figures measure mmstream."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("loadgen", help="(internal) one load-generator process")
    gen.add_argument("--url", required=True)
    gen.add_argument("--size", type=int, required=True)
    gen.add_argument("--concurrency", type=int, default=4)
    gen.add_argument("streams", nargs="+")
    parser.add_argument("--total", type=parse_size, default=parse_size("1 GiB"))
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.command == "loadgen":
        trio.run(_loadgen, args.url, args.streams, args.size, args.concurrency)
        return 0
    result = trio.run(run_all, args)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
