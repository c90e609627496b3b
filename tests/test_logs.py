"""Structured log lines: JSON and logfmt, ids from context, never a token."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import trio
import trio.lowlevel

from mmstream.config import LogFormat, LoggingConfig
from mmstream.logs import configure_logging, log_context, redact, tag_task


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, list[LogFormat]]]:
    out = io.StringIO()
    chosen: list[LogFormat] = []
    yield out, chosen
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])


def _setup(capture: tuple[io.StringIO, list[LogFormat]], fmt: LogFormat) -> io.StringIO:
    out, chosen = capture
    chosen.append(fmt)
    configure_logging(LoggingConfig(level="DEBUG", format=fmt), stream=out)
    return out


_LOGFMT_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def _parse_logfmt(line: str) -> dict[str, str]:
    pairs = _LOGFMT_PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line  # nothing unparsed
    out = {}
    for key, value in pairs:
        if value.startswith('"'):
            value = json.loads(value)  # the escapes used are a subset of JSON's
        out[key] = value
    return out


def test_json_line_with_ids_and_extras(capture: tuple[io.StringIO, list[LogFormat]]) -> None:
    out = _setup(capture, "json")
    with log_context(connection="c7", stream="take-1"):
        logging.getLogger("mmstream.server").info("stream %s", "created", extra={"size": 5})
    logging.getLogger("mmstream.server").warning("after")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "stream created"
    assert (first["conn"], first["stream"], first["size"]) == ("c7", "take-1", 5)
    assert first["level"] == "info" and first["logger"] == "mmstream.server"
    assert first["ts"].endswith("Z")
    assert "conn" not in second and "stream" not in second


def test_logfmt_quotes_what_needs_quoting(capture: tuple[io.StringIO, list[LogFormat]]) -> None:
    out = _setup(capture, "logfmt")
    with log_context(connection="c1"):
        logging.getLogger("mmstream").info(
            'said "hi" = x\nnext', extra={"path": "/streams/a b", "empty": "", "ok": True}
        )
    fields = _parse_logfmt(out.getvalue().strip())
    assert fields["msg"] == 'said "hi" = x\nnext'
    assert fields["conn"] == "c1"
    assert fields["path"] == "/streams/a b"
    assert fields["empty"] == ""
    assert fields["ok"] == "true"


def test_text_format(capture: tuple[io.StringIO, list[LogFormat]]) -> None:
    out = _setup(capture, "text")
    with log_context(connection="c2", stream="s"):
        logging.getLogger("mmstream.x").error("boom", extra={"code": "io-error"})
        logging.getLogger("mmstream.x").info("upload bound conn=c2 stream=s offset=0")
    assert out.getvalue().splitlines() == [
        "ERROR mmstream.x: boom conn=c2 stream=s code=io-error",
        "INFO mmstream.x: upload bound conn=c2 stream=s offset=0",
    ]


def test_exceptions_are_one_record(capture: tuple[io.StringIO, list[LogFormat]]) -> None:
    out = _setup(capture, "json")
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        logging.getLogger("mmstream").exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "RuntimeError: kaput" in json.loads(lines[0])["exc"]


@pytest.mark.parametrize("fmt", ["json", "logfmt", "text"])
def test_never_a_token(capture: tuple[io.StringIO, list[LogFormat]], fmt: LogFormat) -> None:
    out = _setup(capture, fmt)
    log = logging.getLogger("mmstream.server")
    log.info("GET /streams/a?token=s3cr3t-1&x=1 HTTP/1.1")
    log.info("upgrade", extra={"token": "s3cr3t-2", "auth_token": "s3cr3t-3", "user": "bob"})
    log.info("headers: Authorization: Bearer s3cr3t-4")
    log.info("%s", {"api_key": "s3cr3t-5"})
    with log_context(connection="c"):
        log.info("url ws://h/v1?access_token=s3cr3t-6")
    text = out.getvalue()
    assert "s3cr3t" not in text
    assert "bob" in text and "x=1" in text
    assert text.count("[redacted]") == 6


def test_redact_keeps_ordinary_text() -> None:
    assert redact("stream take-1 finalized, 42 bytes") == "stream take-1 finalized, 42 bytes"


async def test_trio_tasks_inherit_the_ids(capture: tuple[io.StringIO, list[LogFormat]]) -> None:
    out = _setup(capture, "json")

    async def child(n: int) -> None:
        await trio.lowlevel.checkpoint()
        with log_context(stream=f"s{n}"):
            logging.getLogger("mmstream").info("child")

    async with trio.open_nursery() as nursery:
        for n in range(2):
            with log_context(connection=f"c{n}"):
                nursery.start_soon(child, n)
    lines = sorted((r["conn"], r["stream"]) for r in map(json.loads, out.getvalue().splitlines()))
    assert lines == [("c0", "s0"), ("c1", "s1")]


async def test_a_tagged_task_keeps_its_tag_to_itself(
    capture: tuple[io.StringIO, list[LogFormat]],
) -> None:
    out = _setup(capture, "json")

    async def connection(n: int) -> None:
        tag_task(connection=f"c{n}")
        await trio.lowlevel.checkpoint()
        logging.getLogger("mmstream").info("open")

    async with trio.open_nursery() as nursery:
        for n in range(2):
            nursery.start_soon(connection, n)
    logging.getLogger("mmstream").info("after")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(r["conn"] for r in records[:2]) == ["c0", "c1"]
    assert "conn" not in records[2]
