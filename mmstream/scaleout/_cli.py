"""Command-line pieces of scale-out, kept here so ``mmstream/cli.py`` only registers them.

``serve --workers`` is registered by ``mmstream/_serve_command.py`` and runs
:func:`run_workers` from here: a single server never loads scale-out."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from ..config import Config
from ..errors import ConfigError
from ._fanout import list_cluster, node_urls
from ._haproxy import (
    DEFAULT_BIND,
    DEFAULT_NODES,
    BalancerOptions,
    max_maxconn,
    parse_duration,
    parse_endpoint,
    parse_nodes,
    render_haproxy_config,
)
from ._supervisor import Child, Supervisor, plan_workers, run_supervisor, serve_argv

__all__ = [
    "add_haproxy_config_command",
    "add_nodes_to_ls",
    "balancer_options_from_args",
    "run_workers",
]

_DEFAULT_NODES_TEXT = ",".join(str(n.endpoint) for n in DEFAULT_NODES)


def add_balancer_arguments(parser: argparse.ArgumentParser) -> None:
    """The HAProxy knobs, shared by ``haproxy-config`` and ``serve --workers``."""
    defaults = BalancerOptions()
    group = parser.add_argument_group("HAProxy")
    group.add_argument(
        "--bind",
        default=str(DEFAULT_BIND),
        metavar="HOST:PORT",
        help=f"where HAProxy listens (default: {DEFAULT_BIND})",
    )
    group.add_argument(
        "--check-interval",
        default="1s",
        metavar="TIME",
        help="health check period, e.g. 1s or 500ms (default: 1s)",
    )
    group.add_argument(
        "--fall", type=int, default=defaults.fall, help="failed checks to mark a node down"
    )
    group.add_argument(
        "--rise", type=int, default=defaults.rise, help="passed checks to mark it up"
    )
    group.add_argument(
        "--maxconn",
        type=int,
        default=defaults.maxconn,
        help=f"HAProxy's connection limit (default: {defaults.maxconn}; two fds each)",
    )
    group.add_argument(
        "--tunnel-timeout",
        default="1h",
        metavar="TIME",
        help="idle limit of an upgraded WebSocket (default: 1h)",
    )
    group.add_argument("--retries", type=int, default=defaults.retries, help="connect retries")
    group.add_argument(
        "--no-redispatch",
        dest="redispatch",
        action="store_false",
        help="retry a failed connect on the same node only (503 while the owner is down)",
    )
    group.add_argument(
        "--relay-listeners",
        action="store_true",
        help="live listener GETs to the least-loaded node, which relays from the owner "
        "(nodes need cluster.peers; serve --workers passes them)",
    )
    group.add_argument(
        "--source-bind",
        metavar="HOST:PORT",
        help="where Icecast sources (ffmpeg's icecast output) connect, in TCP mode: "
        "a PUT/SOURCE body without length or chunking does not pass HTTP mode "
        "(default: none)",
    )
    group.add_argument("--stats-socket", type=Path, metavar="PATH", help="UNIX stats socket")
    group.add_argument(
        "--haproxy-log", action="store_true", help="HAProxy logs node DOWN/UP notices to stderr"
    )


def balancer_options_from_args(args: argparse.Namespace) -> BalancerOptions:
    """Build the options and warn when ``maxconn`` would not fit this machine's fd limit
    (only a warning: HAProxy may run elsewhere, or as root with a raised limit)."""
    options = BalancerOptions(
        bind=parse_endpoint(args.bind),
        check_interval=parse_duration(args.check_interval),
        fall=args.fall,
        rise=args.rise,
        maxconn=args.maxconn,
        tunnel_timeout=parse_duration(args.tunnel_timeout),
        retries=args.retries,
        redispatch=args.redispatch,
        stats_socket=args.stats_socket,
        log_to_stderr=args.haproxy_log,
        relay_listeners=args.relay_listeners,
        source_bind=parse_endpoint(args.source_bind) if args.source_bind else None,
    )
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and options.maxconn > max_maxconn(soft):
        print(
            f"mmstream: warning: maxconn {options.maxconn} needs about "
            f"{2 * options.maxconn + 200} file descriptors; the limit here is {soft} "
            f"(use --maxconn {max_maxconn(soft)} or raise `ulimit -n`)",
            file=sys.stderr,
        )
    return options


def _cmd_haproxy_config(args: argparse.Namespace) -> int:
    text = render_haproxy_config(parse_nodes(args.nodes), balancer_options_from_args(args))
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


def add_haproxy_config_command(commands: Any) -> None:
    """Register ``mmstream haproxy-config`` on the top-level subparsers object."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "haproxy-config",
        help="print an HAProxy config that shards streams by id over nodes",
        description="Print an HAProxy 2.6+ configuration routing every connection of a "
        "stream to the node that owns its id (consistent hashing on the id in the path).",
    )
    parser.add_argument(
        "--nodes",
        default=_DEFAULT_NODES_TEXT,
        metavar="[N=]HOST:PORT,...",
        help=f"the mmstream nodes; N pins a node's number (default: {_DEFAULT_NODES_TEXT})",
    )
    parser.add_argument("-o", "--output", type=Path, metavar="PATH", help="write here, not stdout")
    add_balancer_arguments(parser)
    parser.set_defaults(handler=_cmd_haproxy_config)


def run_workers(
    workers: int,
    config: Config,
    *,
    config_path: Path | None,
    log_level: str | None,
    haproxy_bind: str | None = None,
    haproxy_config: Path | None = None,
    haproxy_sources: str | None = None,
) -> int:
    """``mmstream serve --workers N``: supervise the workers (and HAProxy) until a signal."""
    plan = plan_workers(
        workers,
        host=config.server.host,
        base_port=config.server.port,
        cache_dir=config.cache.directory,
    )
    # Every worker may relay any other's streams to its own listeners (docs/scaling.md).
    peers = [w.node.endpoint for w in plan]
    children = [
        Child(
            w.node.name,
            serve_argv(w, config=config_path, log_level=log_level, peers=peers),
            w.node.endpoint,
        )
        for w in plan
    ]
    # No log_to_stderr: in the foreground (-db) HAProxy prints node DOWN/UP notices itself.
    options = BalancerOptions(
        bind=parse_endpoint(haproxy_bind) if haproxy_bind else DEFAULT_BIND,
        relay_listeners=True,
        source_bind=parse_endpoint(haproxy_sources) if haproxy_sources else None,
    )
    text = render_haproxy_config([w.node for w in plan], options)
    nodes = ",".join(str(w.node.endpoint) for w in plan)
    if haproxy_bind is not None:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise ConfigError("--haproxy: haproxy is not installed (apt-get install haproxy)")
        haproxy_config = haproxy_config or config.cache.directory / "haproxy.cfg"
        argv = (haproxy, "-db", "-f", str(haproxy_config))
        children.append(Child("haproxy", argv, options.bind, after_others=True))
    if haproxy_config is not None:
        haproxy_config.parent.mkdir(parents=True, exist_ok=True)
        haproxy_config.write_text(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    for w in plan:
        print(
            f"mmstream: {w.node.name}: ws://{w.node.endpoint}/v1/streams/{{id}} "
            f"cache {w.cache_dir}",
            file=sys.stderr,
        )

    def ready() -> None:
        if haproxy_bind is None:
            where = f"config written to {haproxy_config}" if haproxy_config else "config above"
            print(f"mmstream: {workers} workers ready; HAProxy {where}", file=sys.stderr)
        else:
            print(
                f"mmstream: cluster ready: ws://{options.bind}/v1/streams/{{id}} and "
                f"http://{options.bind}/streams/{{id}} through HAProxy ({haproxy_config}); "
                f"list them all: mmstream ls --nodes {nodes}; Ctrl-C stops everything",
                file=sys.stderr,
                flush=True,
            )

    return trio.run(partial(run_supervisor, Supervisor(children), on_ready=ready))


def add_nodes_to_ls(commands: Any) -> None:
    """Give ``ls`` ``--nodes``: list every node of a cluster directly and merge."""
    ls: argparse.ArgumentParser = commands.choices["ls"]
    single: Callable[[argparse.Namespace], int] = ls.get_default("handler")
    ls.add_argument(
        "--nodes",
        metavar="HOST:PORT,...",
        help="list each node of a cluster directly (not through the balancer) and show which "
        "node holds each stream; exit status 1 if a node cannot be reached",
    )

    def ls_one_or_all(args: argparse.Namespace) -> int:
        if args.nodes is None:
            return single(args)
        return trio.run(_ls_nodes, node_urls(args.nodes), args.json, args.token)

    ls.set_defaults(handler=ls_one_or_all)


async def _ls_nodes(urls: tuple[str, ...], as_json: bool, token: str | None) -> int:
    listing = await list_cluster(urls, token=token)
    for node, why in sorted(listing.failures.items()):
        print(f"mmstream: {node}: {why}", file=sys.stderr)
    if as_json:
        rows = [
            {**attrs.asdict(p.stat), "node": p.node, "also_on": list(p.also_on)}
            for p in listing.streams
        ]
        print(json.dumps(rows, indent=2))
    else:
        table = [("STREAM", "STATUS", "SIZE", "NODE", "")]
        table += [
            (
                p.stat.stream,
                p.stat.status,
                str(p.stat.size),
                p.node,
                f"ALSO ON {', '.join(p.also_on)}" if p.also_on else "",
            )
            for p in listing.streams
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 1 if listing.failures else 0
