"""The client side of the command line: ``put``, ``get``, ``stat``, ``ls``, ``rm``.

Each command opens one connection with :func:`mmstream.client.connect` (to the endpoint bound
to the stream when there is one) and turns every failure into one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import mimetypes
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import IO, Any

import attrs
import trio

from .audio import HEAD_SIZE, describe_audio
from .client import DEFAULT_CHUNK_SIZE, DEFAULT_URL, Client, connect
from .errors import InvalidArgumentError, MmstreamError, StreamExistsError, StreamNotFoundError
from .media import parse_clock
from .protocol import StreamStat

__all__ = ["URL_ENV", "add_client_commands"]

URL_ENV = "MMSTREAM_URL"
TOKEN_ENV = "MMSTREAM_TOKEN"
#: ``get`` asks for ranges of this size, so memory stays bounded whatever the stream's size.
_READ_PIECE = 16 * 1024 * 1024
#: How often a follower asks again for a stream that does not exist yet.
_CREATION_POLL = 0.25


def add_client_commands(commands: Any) -> None:
    """Add the client subcommands to the ``mmstream`` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"server URL (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    common.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"access token, sent in the first message (default: ${TOKEN_ENV}; prefer the "
        "variable: a command line is visible to other users)",
    )

    put = commands.add_parser("put", parents=[common], help="upload a file or stdin as a stream")
    put.add_argument(
        "src", metavar="SRC", help="file to upload, or - for stdin (a live pipe works)"
    )
    put.add_argument("--stream", required=True, metavar="ID", help="stream id")
    put.add_argument("--content-type", metavar="T", help="default: guessed from SRC's name")
    put.add_argument(
        "--chunk-size",
        type=_size,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"bytes per WebSocket frame (default {DEFAULT_CHUNK_SIZE})",
    )
    put.add_argument("--resume", action="store_true", help="continue an interrupted upload")
    put.add_argument("--no-finalize", action="store_true", help="leave the stream uploading")
    put.set_defaults(handler=_sync(_put))

    get = commands.add_parser("get", parents=[common], help="download a stream or a range")
    get.add_argument("stream", metavar="ID")
    get.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="OUT",
        help="file (replaced only once the download is whole), or - for stdout",
    )
    get.add_argument("--offset", type=_size, default=0, metavar="N")
    get.add_argument("--length", type=_size, default=None, metavar="N")
    get.add_argument(
        "--from",
        dest="start",
        type=_clock,
        default=None,
        metavar="T",
        help="from this time of the stream: seconds or [h:]m:s from its start (10:00 is ten "
        "minutes in), negative back from its end; the stream's header comes first",
    )
    get.add_argument(
        "--to", dest="stop", type=_clock, default=None, metavar="T", help="up to this time"
    )
    get.add_argument(
        "--follow",
        action="store_true",
        help="keep writing as the stream grows until it is finalized; waits for a stream "
        "that does not exist yet",
    )
    get.add_argument(
        "--live",
        action="store_true",
        help="with --follow: join like a player — the stream's header, then audio from just "
        "before the live edge (for piping into ffplay mid-stream)",
    )
    get.set_defaults(handler=_sync(_get))

    stat = commands.add_parser("stat", parents=[common], help="show one stream")
    stat.add_argument("stream", metavar="ID")
    stat.add_argument("--json", action="store_true")
    stat.set_defaults(handler=_sync(_stat))

    ls = commands.add_parser("ls", parents=[common], help="list streams")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_sync(_ls))

    title = commands.add_parser("title", parents=[common], help="set a live stream's title")
    title.add_argument("stream", metavar="ID")
    title.add_argument("title", metavar="TITLE")
    title.set_defaults(handler=_sync(_title))

    rm = commands.add_parser("rm", parents=[common], help="delete a stream")
    rm.add_argument("stream", metavar="ID")
    rm.set_defaults(handler=_sync(_rm))


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _clock(text: str) -> float:
    try:
        return parse_clock(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sync(
    command: Callable[[argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return trio.run(command, args)
        except MmstreamError:
            raise  # the caller prints it as one line
        except BrokenPipeError:  # `mmstream get x | head`: the reader left, nothing to say
            _silence_stdout()
            return 1
        except OSError as exc:  # a local file: missing, unreadable, disk full...
            where = f" {exc.filename}" if exc.filename else ""
            print(f"mmstream: error:{where}: {exc.strerror or exc}", file=sys.stderr)
            return 1

    return run


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


async def _put(args: argparse.Namespace) -> int:
    if args.chunk_size < 1:
        raise InvalidArgumentError("--chunk-size must be at least 1")
    source: IO[bytes]
    if args.src == "-":
        source, total, name = sys.stdin.buffer, None, None
    else:
        source = await trio.to_thread.run_sync(open, args.src, "rb")
        total, name = os.fstat(source.fileno()).st_size, args.src
    content_type = args.content_type or (name and mimetypes.guess_type(name)[0])
    progress = _Progress(args.stream, total) if sys.stderr.isatty() else None
    try:
        async with connect(args.url, stream=args.stream, token=args.token) as client:
            try:
                stat = await client.upload(
                    None,
                    source,
                    content_type=content_type or "application/octet-stream",
                    resume=args.resume,
                    finalize=not args.no_finalize,
                    chunk_size=args.chunk_size,
                    progress=progress,
                    size_hint=total,
                )
            except StreamExistsError as exc:
                raise StreamExistsError(f"{exc} (--resume continues it)") from None
    finally:
        if progress is not None:
            progress.done()
        if source is not sys.stdin.buffer:
            source.close()
    digest = f" sha256 {stat.sha256}" if stat.sha256 else ""
    print(f"{stat.stream}: {stat.size} bytes, {stat.status}{digest}", file=sys.stderr)
    return 0


async def _get(args: argparse.Namespace) -> int:
    if args.live and (not args.follow or args.offset):
        raise InvalidArgumentError("--live goes with --follow and picks its own offset")
    timed = args.start is not None or args.stop is not None
    if timed and (args.live or args.offset or args.length is not None):
        raise InvalidArgumentError(
            "--from/--to pick the bytes: not with --offset, --length, --live"
        )
    if args.output == "-" and sys.stdout.isatty():
        raise InvalidArgumentError("not writing audio bytes to a terminal: use -o FILE or a pipe")
    output = await trio.to_thread.run_sync(_Output.open, args.output)
    try:
        async with connect(args.url, stream=args.stream, token=args.token) as client:
            if timed:
                await _download_times(client, args, output.file)
            elif args.follow:
                await _follow(client, args, output.file)
            else:
                await _download(client, args, output.file)
        await trio.to_thread.run_sync(output.commit)
    finally:
        await trio.to_thread.run_sync(output.discard)
    return 0


@attrs.define
class _Output:
    """Where ``get`` writes. A regular file (or a new one) is written beside itself and
    renamed over it only once the download is whole, so a failure leaves FILE as it was and
    no partial file behind; stdout, devices and pipes are written in place."""

    file: IO[bytes]
    #: The temporary file and the path it becomes; None when written in place.
    rename: tuple[str, str] | None = None

    @classmethod
    def open(cls, path: str) -> _Output:
        if path == "-":
            return cls(sys.stdout.buffer)
        target = os.path.realpath(path)  # replace a symlink's target, not the link
        if os.path.exists(target) and not os.path.isfile(target):
            return cls(open(target, "wb"))
        directory, name = os.path.split(target)
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.part")
        # Mode 0o666 as open() would create FILE (the umask applies), or FILE's own mode.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        if os.path.exists(target):
            os.fchmod(fd, os.stat(target).st_mode & 0o7777)
        return cls(os.fdopen(fd, "wb"), (temporary, target))

    def commit(self) -> None:
        self.file.flush()
        if self.rename is not None:
            self.file.close()
            os.replace(*self.rename)
            self.rename = None

    def discard(self) -> None:
        """Close, and remove the temporary file unless committed (idempotent)."""
        if self.file is not sys.stdout.buffer:
            self.file.close()
        if self.rename is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.rename[0])
            self.rename = None


async def _download(client: Any, args: argparse.Namespace, out: IO[bytes]) -> None:
    stat = await client.stat()
    size = stat.size
    end = size if args.length is None else min(size, args.offset + args.length)
    position = args.offset
    while True:  # at least once, so an offset past the end gets the server's error
        # Every piece from the stream stat saw: never the start of one and the end of another
        # created under the same id meanwhile (the server refuses with stream-changed).
        length = min(_READ_PIECE, max(0, end - position))
        data = await client.read(None, position, length, generation=stat.generation)
        if data:
            await trio.to_thread.run_sync(out.write, data)
            position += len(data)
        if not data or position >= end:
            return


async def _download_times(client: Any, args: argparse.Namespace, out: IO[bytes]) -> None:
    """The stream's header, then its bytes from ``--from`` up to ``--to`` (or its end; with
    ``--follow``, until it is finalized)."""
    stop = None if args.stop is None else await client.offset_at(None, args.stop)
    if stop is None and not args.follow:
        stop = (await client.stat()).size
    follower = await client.tail(None, time=args.start or 0.0)
    left = math.inf if stop is None else follower.header + stop - follower.offset
    if left <= follower.header:
        raise InvalidArgumentError("--to is not after --from: nothing to get")
    async for chunk in follower:
        await trio.to_thread.run_sync(_write_and_flush, out, chunk[: int(min(left, len(chunk)))])
        left -= len(chunk)
        if left <= 0:
            return


async def _follow(client: Any, args: argparse.Namespace, out: IO[bytes]) -> None:
    left = math.inf if args.length is None else args.length
    follower = await _tail_once_created(client, args)
    async for chunk in follower:
        if len(chunk) >= left:
            await trio.to_thread.run_sync(out.write, chunk[: int(left)])
            return
        left -= len(chunk)
        await trio.to_thread.run_sync(_write_and_flush, out, chunk)


async def _tail_once_created(client: Any, args: argparse.Namespace) -> Any:
    """A listener often starts before the recorder: wait for the stream to appear."""
    waiting = False
    while True:
        try:
            return await client.tail(None, args.offset, live=args.live)
        except StreamNotFoundError:
            if not waiting:
                print(f"mmstream: waiting for stream {args.stream} to be created", file=sys.stderr)
                waiting = True
            await trio.sleep(_CREATION_POLL)


def _write_and_flush(out: IO[bytes], data: bytes) -> None:
    # A follower is usually piped into a player: hand bytes on as they arrive.
    out.write(data)
    out.flush()


async def _stat(args: argparse.Namespace) -> int:
    async with connect(args.url, stream=args.stream, token=args.token) as client:
        stat = await client.stat()
        audio = await _audio(client, stat)
    fields = _as_dict(stat) | ({"audio": audio} if audio else {})
    if args.json:
        print(json.dumps(fields, indent=2))
    else:
        for key, value in fields.items():
            if key == "titles":
                for item in value:
                    where = f"{_time(item['time'])} at byte {item['offset']}"
                    print(f"{'title':<17} {where}: {item['title']}")
            elif key in ("metadata", "audio"):
                for name, item in value.items():
                    print(f"{key + '.' + name:<17} {_human(name, item)}")
            else:
                print(f"{key:<17} {_human(key, value)}")
    return 0


async def _audio(client: Client, stat: StreamStat) -> dict[str, str | int | float]:
    """Container and, for a WAV, duration and format, from the stream's first bytes."""
    if stat.size == 0 or stat.status == "error":
        return {}
    head = await client.read(offset=0, length=min(HEAD_SIZE, stat.size))
    return describe_audio(head, stat.size)


async def _ls(args: argparse.Namespace) -> int:
    async with connect(args.url, token=args.token) as client:
        streams = await client.list()
    if args.json:
        print(json.dumps([_as_dict(s) for s in streams], indent=2))
        return 0
    rows = [("STREAM", "STATUS", "SIZE", "CONTENT-TYPE", "CREATED")]
    rows += [
        (s.stream, s.status, str(s.size), s.content_type, _time(s.created_at)) for s in streams
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]))
    return 0


async def _title(args: argparse.Namespace) -> int:
    async with connect(args.url, stream=args.stream, token=args.token) as client:
        await client.set_title(args.title)
    return 0


async def _rm(args: argparse.Namespace) -> int:
    async with connect(args.url, stream=args.stream, token=args.token) as client:
        await client.delete()
    return 0


def _as_dict(stat: StreamStat) -> dict[str, Any]:
    return attrs.asdict(stat)


def _human(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.endswith("_at"):
        return _time(value)
    if key in ("size", "durable_offset", "reserved"):
        return f"{value} ({_bytes(value)})"
    if key == "duration":
        return f"{value:.3f} s"
    return str(value)


def _time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class _Progress:
    """One self-rewriting line on stderr while uploading, at most ten updates a second."""

    def __init__(self, stream: str, total: int | None) -> None:
        self._stream = stream
        self._total = total
        self._started = time.monotonic()
        self._shown = 0.0
        self._first: int | None = None
        self._drawn = False

    def __call__(self, offset: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = offset
        if now - self._shown < 0.1 and offset != self._total:
            return
        self._shown = now
        rate = (offset - self._first) / max(now - self._started, 1e-6)
        of = f" / {_bytes(self._total)}" if self._total else ""
        line = f"\r{self._stream}: {_bytes(offset)}{of}  {_bytes(rate)}/s"
        sys.stderr.write(f"{line:<60}")
        sys.stderr.flush()
        self._drawn = True

    def done(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
