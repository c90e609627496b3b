"""One structured line per event: JSON or logfmt (or plain text), chosen by ``logging.format``.

Every line carries the connection id and stream id of the task that logged it. The server
sets them once per connection / request with :func:`log_context`; Trio tasks inherit context
variables from the task that started them, so handlers need not pass ids around.

Secrets never reach the log: any field whose name looks like a credential is replaced, and
``token=...`` / ``Authorization: Bearer ...`` inside messages (a URL with a query token,
a request head) and an HLS capability's ``sig=...`` in a URL are masked too.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from typing import IO, Any

from .config import LogFormat, LoggingConfig

__all__ = [
    "JsonFormatter",
    "LogfmtFormatter",
    "TextFormatter",
    "configure_logging",
    "log_context",
    "make_formatter",
    "redact",
    "tag_task",
]

_connection_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mmstream_connection_id", default=None
)
_stream_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mmstream_stream_id", default=None
)

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization|cookie|api_?key", re.I)
_SECRET_IN_TEXT = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)\b([a-z_]*(?:token|secret|password|authorization|api_?key)[a-z_]*)([\"']?\s*[=:]\s*[\"']?)(?!(?:bearer|basic)\s)[^\s&\"',;]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # An HLS capability's signature in a URL (mmstream/capability.py): a credential too.
    (re.compile(r"(?i)([?&;]sig=)[^&\s\"',;]+"), rf"\1{REDACTED}"),
]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def tag_task(*, connection: str | None = None, stream: str | None = None) -> None:
    """Tag every line the current task logs from now on (and tasks it starts). For a task
    that serves one connection for its whole life: Trio gives each task its own copy of the
    context, so the tag ends with the task."""
    if connection is not None:
        _connection_id.set(connection)
    if stream is not None:
        _stream_id.set(stream)


@contextlib.contextmanager
def log_context(*, connection: str | None = None, stream: str | None = None) -> Iterator[None]:
    """Tag every line logged inside (and in tasks started inside) with these ids."""
    tokens: list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]] = []
    if connection is not None:
        tokens.append((_connection_id, _connection_id.set(connection)))
    if stream is not None:
        tokens.append((_stream_id, _stream_id.set(stream)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def redact(text: str) -> str:
    """Mask credentials that appear inside free text."""
    for pattern, replacement in _SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _clean(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ordered fields of one line: when, level, logger, ids, message, extras, error."""
    when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    fields: dict[str, Any] = {
        "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    conn = getattr(record, "conn", None) or _connection_id.get()
    stream = getattr(record, "stream", None) or _stream_id.get()
    if conn is not None:
        fields["conn"] = conn
    if stream is not None:
        fields["stream"] = stream
    fields["msg"] = redact(record.getMessage())
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in ("conn", "stream") and not key.startswith("_"):
            fields[key] = _clean(key, value)
    if record.exc_info:
        fields["exc"] = redact(logging.Formatter().formatException(record.exc_info))
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False, default=str)


_BARE = re.compile(r"[^\s=\"\\]+")


def _logfmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _logfmt_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) or "_"


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs; values with spaces, quotes or ``=`` are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in _fields(record).items())


class TextFormatter(logging.Formatter):
    """For a person at a terminal: ``LEVEL logger: message conn=… stream=… key=value``
    (ids the message already states are not repeated)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        level, logger, message = fields.pop("level"), fields.pop("logger"), fields.pop("msg")
        fields.pop("ts")
        exc = fields.pop("exc", None)
        for key in ("conn", "stream"):
            if f"{key}=" in message:
                fields.pop(key, None)
        line = f"{level.upper()} {logger}: {message}"
        if fields:
            line += " " + " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())
        return f"{line}\n{exc}" if exc else line


_FORMATTERS: Mapping[LogFormat, type[logging.Formatter]] = {
    "json": JsonFormatter,
    "logfmt": LogfmtFormatter,
    "text": TextFormatter,
}


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    return _FORMATTERS[fmt]()


def configure_logging(
    config: LoggingConfig, *, stream: IO[str] | None = None, level: str | None = None
) -> logging.Handler:
    """Route every logger (mmstream's and the libraries') through one formatted handler
    on stderr. ``level`` (from ``--log-level``) overrides ``config.level``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(config.format))
    logging.basicConfig(level=level or config.level, handlers=[handler], force=True)
    return handler
