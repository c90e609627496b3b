"""Command-line pieces of scale-out, kept here so ``mmstream/cli.py`` only registers them."""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path
from typing import Any

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

__all__ = ["add_haproxy_config_command", "balancer_options_from_args"]

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
