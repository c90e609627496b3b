"""Many real-time streams against one fresh server, a few runs in a row.

    .venv/bin/python bench/slow_streams.py [--conns 1000] [--seconds 15] [--runs 3]
        [--transport websockets] [--backend mmap]

The issue's "1,000 slow streams" case alone, repeated: ``make bench`` runs it once, after
everything else, and on a shared machine one run says little about a margin of a few tenths
of a second. Each run starts a server (default configuration, 4 MiB initial reservations,
pinned to the server core as in ``make bench``), runs the generator's ``slow`` mode
(96 KB/s in 4 KiB frames per connection) and prints a row: dropped connections, the worst
connection's unacknowledged audio when the sending ends, and the generator's and the server's CPU shares.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._procs import (
    HOST,
    Cores,
    ServerProcess,
    free_port,
    python_module,
    run_child,
)

CHUNK, RATE = 4096, 96_000


def one_run(args: argparse.Namespace, cores: Cores, work: Path) -> dict[str, float]:
    port = free_port()
    config = work / "mmstream.toml"
    config.write_text(
        f'[cache]\ndirectory = "{work / "cache"}"\nbackend = "{args.backend}"\n'
        'max_cache_size = "16 GiB"\ninitial_size = "4 MiB"\n'
        f'[server]\nhost = "{HOST}"\nport = {port}\ntransport = "{args.transport}"\n'
        "max_connections = 4096\nmax_connections_per_ip = 4096\n"
        '[logging]\nlevel = "WARNING"\n'
    )
    argv = python_module("mmstream", "serve", "--config", str(config))
    server = ServerProcess.start(
        "mmstream", argv, port, cpu=cores.server, log_dir=work, health="/healthz"
    )
    try:
        cpu_before = server.cpu_seconds()
        spec = {"port": port, "subprotocol": "mmstream.v1", "mode": "slow", "prefix": "s",
                "chunk": CHUNK, "conns": args.conns, "rate": RATE, "duration": args.seconds}  # fmt: skip
        result = run_child(
            "bench.loadgen", spec, cpu=cores.generator, timeout=args.seconds * 4 + 120
        )
        wall = result["seconds"] + result["setup_s"] + result["drain_s"]
        return {
            "dropped": result["dropped"],
            "worst_backlog_s": result["worst_conn_backlog_s"],
            "median_backlog_s": result["median_conn_backlog_s"],
            "generator_lag_s": result["gen_max_lag_s"],
            "generator_cpu": result["gen_cpu"],
            "server_cpu": (server.cpu_seconds() - cpu_before) / wall,
        }
    finally:
        server.stop()
        shutil.rmtree(work / "cache", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transport", default="websockets")
    parser.add_argument("--backend", default="mmap")
    args = parser.parse_args()
    cores = Cores.detect()
    print(f"{args.conns} streams for {args.seconds:g} s, {args.transport}/{args.backend}")
    print("| run | dropped | worst backlog s | median backlog s | generator lag s "
          "| generator CPU | server CPU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "results") as tmp:
        for run in range(1, args.runs + 1):
            row = one_run(args, cores, Path(tmp))
            print(f"| {run} | {row['dropped']:.0f} | {row['worst_backlog_s']:.2f} | "
                  f"{row['median_backlog_s']:.3f} | "
                  f"{row['generator_lag_s']:.3f} | {row['generator_cpu']:.2f} | "
                  f"{row['server_cpu']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
