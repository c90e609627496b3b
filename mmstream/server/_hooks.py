"""Calling Icecast-style listener hooks: one small HTTP POST, spoken through h11.

The decisions (the form, what admits a listener, the failure policy) are
:mod:`mmstream.icecast`'s; this only moves the bytes, within the hook's timeout, and says
whether the hook answered, timed out or could not be reached.
"""

from __future__ import annotations

import logging
import ssl
from urllib.parse import urlsplit

import h11
import trio

from ..icecast import HookOutcome
from ._http import SERVER_HEADER

__all__ = ["HookAnswer", "post_form"]

log = logging.getLogger("mmstream.server")

HookAnswer = tuple[HookOutcome, int | None, dict[str, str]]
#: A hook's answer head is a few hundred bytes; a body is not read.
_RECEIVE_SIZE = 16 * 1024


async def post_form(url: str, body: bytes, seconds: float) -> HookAnswer:
    """POST ``body`` (a urlencoded form) to ``url``, giving it ``seconds`` to answer; the
    outcome, status and headers."""
    with trio.move_on_after(seconds):
        try:
            return await _post(url, body)
        except (OSError, ssl.SSLError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            log.warning("listener hook %s unreachable: %s", _shown(url), exc)
            return "unreachable", None, {}
    log.warning("listener hook %s did not answer within %.1fs", _shown(url), seconds)
    return "timeout", None, {}


def _shown(url: str) -> str:
    """The URL without credentials or query, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"


async def _post(url: str, body: bytes) -> HookAnswer:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    stream: trio.abc.Stream
    if https:
        stream = await trio.open_ssl_over_tcp_stream(host, port)
    else:
        stream = await trio.open_tcp_stream(host, port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = h11.Request(
            method="POST",
            target=target,
            headers=[
                ("host", parts.netloc.rpartition("@")[2]),
                ("user-agent", SERVER_HEADER.decode()),
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", str(len(body))),
                ("connection", "close"),
            ],
        )
        await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
                continue
            if isinstance(event, h11.Response):
                headers = {
                    name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers
                }
                return "answered", event.status_code, headers
            if isinstance(event, h11.ConnectionClosed):
                return "unreachable", None, {}
