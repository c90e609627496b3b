"""With ``[auth]`` tokens: a source's basic-auth password is its token; live listeners too."""

from __future__ import annotations

import base64
from pathlib import Path

from icecast_helpers import connect, exchange, read_head, running_server

from mmstream.config import AuthConfig, TokenConfig
from mmstream.server import RunningServer

WRITER = "w" * 20
READER = "r" * 20
AUTH = AuthConfig(
    tokens=(
        TokenConfig(WRITER, ("read", "write"), "radio-*"),
        TokenConfig(READER, ("read",), "*"),
    )
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def put(server: RunningServer, stream_id: str, authorization: str | None) -> int:
    header = f"Authorization: {authorization}\r\n" if authorization else ""
    status, headers, _ = await exchange(
        server,
        f"PUT /streams/{stream_id} HTTP/1.1\r\nHost: x\r\n{header}Content-Length: 4\r\n\r\nOggS",
    )
    if status == 401:
        assert_no_browser_prompt(headers)
    return status


def assert_no_browser_prompt(headers: dict[str, str]) -> None:
    """A ``Basic`` challenge makes a browser prompt for a password and keep sending it;
    ``Bearer`` does not (Icecast tools send Basic unasked, and it is still accepted)."""
    assert headers["www-authenticate"].startswith("Bearer realm="), headers


async def test_sources_need_a_write_token_as_their_password(tmp_path: Path) -> None:
    async with running_server(tmp_path, auth=AUTH, source_end="keep") as server:
        assert await put(server, "radio-1", None) == 401
        assert await put(server, "radio-1", basic("source", "not-a-token-at-all")) == 401
        assert await put(server, "radio-1", basic("source", READER)) == 401  # read only
        assert await put(server, "other", basic("source", WRITER)) == 401  # not its streams
        assert server.manager.list() == []
        assert await put(server, "radio-1", basic("source", WRITER)) == 200
        assert server.manager.stat("radio-1").size == 4


async def test_live_listeners_need_a_read_token(tmp_path: Path) -> None:
    async with running_server(tmp_path, auth=AUTH, source_end="keep") as server:
        assert await put(server, "radio-2", basic("source", WRITER)) == 200
        for authorization, expected in [
            (None, 401),
            ("Bearer nope-nope-nope-nope", 401),
            (f"Bearer {READER}", 200),
        ]:
            stream = await connect(server)
            header = f"Authorization: {authorization}\r\n" if authorization else ""
            await stream.send_all(
                f"GET /streams/radio-2 HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode()
            )
            status, headers, _ = await read_head(stream)
            assert status == expected, authorization
            if status == 401:
                assert_no_browser_prompt(headers)
