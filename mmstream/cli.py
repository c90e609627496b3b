"""The ``mmstream`` command line: one subcommand per job, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from ._client_commands import add_client_commands
from ._serve_command import add_serve_command
from .errors import MmstreamError
from .registry import BackendRegistry
from .scaleout._cli import add_haproxy_config_command, add_nodes_to_ls, add_workers_to_serve

Handler = Callable[[argparse.Namespace], int]


def _cmd_backends(args: argparse.Namespace) -> int:
    infos = BackendRegistry().describe()
    if not infos:
        print("no cache backends installed", file=sys.stderr)
        return 1
    width = max(len(info.name) for info in infos)
    for info in infos:
        where = f"{info.distribution} {info.version}" if info.distribution else info.value
        status = "ok" if info.ok else f"BROKEN: {info.error}"
        print(f"{info.name:<{width}}  {where:<28}  {status}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmstream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mmstream {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (default: WARNING; serve uses its config)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backends = commands.add_parser("backends", help="list installed cache backends")
    backends.set_defaults(handler=_cmd_backends)
    add_serve_command(commands)
    add_client_commands(commands)
    add_workers_to_serve(commands)
    add_nodes_to_ls(commands)
    add_haproxy_config_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level or "WARNING", format="%(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except MmstreamError as exc:
        print(f"mmstream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
