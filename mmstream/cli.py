"""The ``mmstream`` command line: one subcommand per job, one-line errors, no tracebacks.

A command imports only what it uses: ``put``, ``get``, ``stat`` and ``rm`` build a parser of
the client commands alone (no server, metrics, config or scale-out modules), so that a short
upload is not mostly Python importing a server (docs/performance.md). The whole parser is
built when no command is named (``mmstream --help``, a typo).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import MmstreamError

Handler = Callable[[argparse.Namespace], int]

#: Every command: ``build_parser`` registers the one named and the modules it needs.
COMMANDS = ("backends", "serve", "put", "get", "stat", "ls", "rm", "haproxy-config")


def _cmd_backends(args: argparse.Namespace) -> int:
    from .registry import BackendRegistry

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


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for (it reads the installed metadata)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from . import __version__

        print(f"mmstream {__version__}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` only (with the commands registered alongside it), or,
    with None, for every command."""
    parser = argparse.ArgumentParser(prog="mmstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (default: WARNING; serve uses its config)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in (None, "backends"):
        backends = commands.add_parser("backends", help="list installed cache backends")
        backends.set_defaults(handler=_cmd_backends)
    if command in (None, "serve"):
        from ._serve_command import add_serve_command

        add_serve_command(commands)
    if command in (None, "put", "get", "stat", "ls", "rm"):
        from ._client_commands import add_client_commands

        add_client_commands(commands)
    if command in (None, "ls"):
        from .scaleout._cli import add_nodes_to_ls

        add_nodes_to_ls(commands)
    if command in (None, "haproxy-config"):
        from .scaleout._cli import add_haproxy_config_command

        add_haproxy_config_command(commands)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is one (options before it take no
    value that could be a command name)."""
    return next((word for word in argv if word in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(words)).parse_args(words)
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
