"""``mmstream serve``: run the server until SIGINT/SIGTERM (kept apart from cli.py so the
client commands and this one can grow without stepping on each other)."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from functools import partial
from pathlib import Path

import trio

from .config import load_config
from .errors import ConfigError, MmstreamError
from .logs import configure_logging

__all__ = ["add_serve_command"]

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

#: The cyclic garbage collector's thresholds for the server process (Python's: 700, 10, 10).
#: Every message allocates a few container objects (a task wakeup's outcome, a frame, a
#: list) that reference counting frees at once, yet they still count towards a collection;
#: with the default, 1,000 real-time streams spent about 15% of the server's core in the
#: collector (1,100 young and 9 full collections in 25 s, the full ones about 130 ms each,
#: every stream stalled meanwhile). See docs/performance.md.
GC_THRESHOLDS = (50_000, 20, 100)


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the server (WebSocket protocol v1 and HTTP on one port)",
        description="Run the mmstream server until SIGINT or SIGTERM, then shut down gracefully.",
    )
    serve.add_argument("--config", type=Path, help="TOML config file (default: $MMSTREAM_CONFIG)")
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="port to listen on, 0 for any (server.port)")
    serve.add_argument("--cache-dir", type=Path, help="where streams live (cache.directory)")
    serve.add_argument(
        "--peers",
        metavar="HOST:PORT,...",
        help="the cluster's workers, to relay their live streams to listeners here (cluster.peers)",
    )
    serve.add_argument(
        "--log-level",
        dest="serve_log_level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="log verbosity (default: logging.level from the config)",
    )
    _add_worker_arguments(serve)
    serve.set_defaults(handler=run_serve)


def _add_worker_arguments(serve: argparse.ArgumentParser) -> None:
    # Registered here, not by mmstream.scaleout: a single server never loads scale-out.
    group = serve.add_argument_group("several workers on this host (docs/scaling.md)")
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N server processes on ports PORT..PORT+N-1 with caches CACHE_DIR/node-0.. "
        "(restarted if they crash) and print the HAProxy config for them",
    )
    group.add_argument(
        "--haproxy",
        nargs="?",
        const="",
        metavar="HOST:PORT",
        help="with --workers: also run HAProxy in front of them "
        "(default: haproxy-config's --bind default)",
    )
    group.add_argument(
        "--haproxy-config",
        type=Path,
        metavar="PATH",
        help="with --workers: write the HAProxy config here instead of printing it",
    )
    group.add_argument(
        "--haproxy-sources",
        metavar="HOST:PORT",
        help="with --workers: HAProxy also takes Icecast sources here, in TCP mode "
        "(haproxy-config --source-bind)",
    )


def run_serve(args: argparse.Namespace) -> int:
    if args.workers is not None:
        return _run_workers(args)
    if any(x is not None for x in (args.haproxy, args.haproxy_config, args.haproxy_sources)):
        raise ConfigError("--haproxy, --haproxy-config and --haproxy-sources go with --workers N")
    from .server import serve  # the server's imports are only needed here

    config = load_config(
        args.config,
        **{
            "server.host": args.host,
            "server.port": args.port,
            "cache.directory": args.cache_dir,
            "cluster.peers": args.peers.split(",") if args.peers else None,
        },
    )
    level = args.serve_log_level or getattr(args, "log_level", None) or config.logging.level
    configure_logging(config.logging, level=level)
    if level != "DEBUG":  # our own connection lines say the same, with ids
        logging.getLogger("websockets").setLevel(logging.WARNING)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        trio.run(partial(serve, config, handle_signals=True))
    except BaseException as exc:
        leaf = _single_leaf(exc)
        if isinstance(leaf, MmstreamError):
            raise leaf from None
        if isinstance(leaf, OSError):
            where = f"{config.server.host}:{config.server.port}"
            print(
                f"mmstream: error: cannot serve on {where}: {leaf.strerror or leaf}",
                file=sys.stderr,
            )
            return 1
        raise
    return 0


def _run_workers(args: argparse.Namespace) -> int:
    from .scaleout._cli import run_workers

    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "cache.directory": args.cache_dir,
    }
    return run_workers(
        args.workers,
        load_config(args.config, **overrides),
        config_path=args.config,
        log_level=args.serve_log_level or args.log_level,
        haproxy_bind=args.haproxy,
        haproxy_config=args.haproxy_config,
        haproxy_sources=args.haproxy_sources,
    )


def _single_leaf(exc: BaseException) -> BaseException:
    """Trio nurseries wrap a lone failure in exception groups; unwrap it for a one-line error."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
