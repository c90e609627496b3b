"""Test 10, access control, over a real server: every operation without a valid token (none,
a wrong one, one without the scope, one for other streams) is refused with ``unauthorized``
and has no effect on the cache directory; the tokens never appear in the logs or replies;
a refused ``Origin`` cannot open a WebSocket."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from wire import http_status

from mmstream.auth import Authorizer, token_from_header
from mmstream.client import connect
from mmstream.config import AuthConfig, ByteSize, CacheConfig, Config, ServerConfig, TokenConfig
from mmstream.errors import UnauthorizedError
from mmstream.server import RunningServer, serve

WRITER = "writer-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
LIVE_ONLY = "live-writer-0123456789abcdef"
WRONG = "wrong-token-0123456789abcdef"
TOKENS = [WRITER, READER, LIVE_ONLY, WRONG]
ORIGIN = "https://radio.example.org"


def auth_config() -> AuthConfig:
    return AuthConfig(
        tokens=(
            TokenConfig(token=WRITER),
            TokenConfig(token=READER, scopes=("read",)),
            TokenConfig(token=LIVE_ONLY, scopes=("read", "write"), streams="live-*"),
        ),
        origins=(ORIGIN,),
    )


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(
        cache=CacheConfig(directory=tmp_path / "cache", initial_size=ByteSize(64 * 1024),
                          sync_policy="always"),
        server=ServerConfig(port=0),
        auth=auth_config(),
    )  # fmt: skip
    running: RunningServer = await nursery.start(serve, config)
    return running


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@asynccontextmanager
async def raw(url: str, **options: Any) -> AsyncIterator[ClientConnection]:
    async with ws_connect(url + "/v1", compression=None, **options) as ws:
        yield ws


async def replies(ws: ClientConnection, frames: list[str | bytes]) -> list[dict[str, Any]]:
    """Send ``frames``; collect the replies (and events) until the probe's or the close."""
    got: list[dict[str, Any]] = []
    with contextlib.suppress(ConnectionClosed):  # a refused hello closes the session
        for frame in frames:
            await ws.send(frame)
        await ws.send(json.dumps({"op": "stat", "stream": "existing", "id": "probe"}))
    with trio.fail_after(5):
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    got.append({"binary": len(message)})
                    continue
                got.append(json.loads(message))
                if got[-1].get("re") == "probe":
                    return got
        except ConnectionClosed:
            return got


def requests(stream: str) -> list[str | bytes]:
    """Every operation, each followed by what would use it (binary frames after append)."""
    ops: list[dict[str, Any]] = [
        {"op": "create", "stream": f"{stream}-new"},
        {"op": "append", "stream": stream},
        {"op": "sync", "stream": stream},
        {"op": "finalize", "stream": stream},
        {"op": "read", "stream": stream},
        {"op": "tail", "stream": stream},
        {"op": "stat", "stream": stream},
        {"op": "list"},
        {"op": "delete", "stream": stream},
    ]
    frames: list[str | bytes] = []
    for n, op in enumerate(ops):
        frames.append(json.dumps({**op, "id": n}))
        if op["op"] == "append":
            frames.append(b"injected bytes")
    return frames


async def test_every_operation_without_a_valid_token_is_refused(
    server: RunningServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    figure: Callable[[str, str, str], None],
) -> None:
    caplog.set_level(logging.DEBUG)
    async with connect(server.url, token=WRITER) as client:
        await client.upload("existing", b"recorded audio")
        await client.create("up")
        await client.append("up", b"live so far")
        await client.create("live-1")
        await client.sync("up")
    before = snapshot(tmp_path / "cache")
    refused = attempts = 0
    seen_text: list[str] = []
    cases: list[tuple[str, str | None, str]] = [
        ("no hello", None, "existing"),
        ("no hello", None, "up"),
        ("wrong token", WRONG, "existing"),
        ("empty token", "", "up"),
        ("read-only token", READER, "up"),
        ("read-only token", READER, "existing"),
        ("token for live-* only", LIVE_ONLY, "up"),
        ("token for live-* only", LIVE_ONLY, "existing"),
    ]
    for label, token, stream in cases:
        frames = requests(stream)
        if token is not None:
            frames.insert(0, json.dumps({"op": "hello", "id": "h", "token": token}))
        async with raw(server.url) as ws:
            got = await replies(ws, frames)
            closed = ws.close_code
        seen_text += [json.dumps(r) for r in got]
        answers = {r["re"]: r for r in got if "re" in r}
        if label in ("wrong token", "empty token"):
            assert answers["h"]["error"]["code"] == "unauthorized"
            assert closed == 1008  # and nothing after the refused hello was applied
        for n, frame in enumerate(f for f in frames if isinstance(f, str)):
            op = json.loads(frame)["op"]
            if op == "hello":
                continue
            attempts += 1
            reply = answers.get(json.loads(frame)["id"])
            allowed = (token == READER and op in ("read", "tail", "stat", "list")) or (
                token == LIVE_ONLY and op == "list"  # allowed, and shows only live-* (below)
            )
            if allowed:
                assert reply is not None and reply["ok"], (label, op, reply)
                continue
            if reply is None:  # not answered: the session was closed after the bad hello
                assert closed == 1008, (label, op)
            else:
                assert reply["ok"] is False and reply["error"]["code"] == "unauthorized", (
                    label, op, reply, n,
                )  # fmt: skip
            refused += 1
    assert snapshot(tmp_path / "cache") == before
    async with connect(server.url, token=READER) as client:
        names = [s.stream for s in await client.list()]
        assert names == ["existing", "live-1", "up"]
        assert await client.read("up") == b"live so far"
        assert await client.read("existing") == b"recorded audio"
    async with connect(server.url, token=LIVE_ONLY) as client:
        assert [s.stream for s in await client.list()] == ["live-1"]  # list is filtered
        await client.append("live-1", b"allowed")
        with pytest.raises(UnauthorizedError):
            await client.delete("existing")
    # HTTP playback: the same tokens, in an Authorization header.
    http = [
        await http_status(server.port, "/streams/existing", None),
        await http_status(server.port, "/streams/existing", f"Bearer {WRONG}"),
        await http_status(server.port, "/streams/existing", f"Bearer {LIVE_ONLY}"),
    ]
    assert http == [401, 401, 401]
    assert await http_status(server.port, "/streams/existing", f"Bearer {READER}") == 200
    basic = base64.b64encode(f"listener:{READER}".encode()).decode()
    assert await http_status(server.port, "/streams/existing", f"Basic {basic}") == 200
    # Origin allow-list: a browser page elsewhere cannot open a WebSocket here.
    with pytest.raises(InvalidStatus) as status:
        async with raw(server.url, origin="https://evil.example"):
            pass
    assert status.value.response.status_code == 403
    async with raw(server.url, origin=ORIGIN) as ws:
        got = await replies(ws, [json.dumps({"op": "hello", "id": 1, "token": READER})])
        assert got[-1]["ok"] is True
    # The server's records (the test's own client logs its frames in this process too).
    server_records = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    logged = "\n".join(record.getMessage() for record in server_records)
    for token in TOKENS:
        assert token not in logged
        assert all(token not in text for text in seen_text)
    figure(
        "10. Auth",
        f"{len(cases)} sessions (no hello, wrong or empty token, read-only token, token for "
        "live-* only) each sending create/append+binary/sync/finalize/read/tail/stat/list/"
        "delete; HTTP GET without, with a wrong and with an out-of-scope Bearer token; an "
        "upgrade from a foreign Origin",
        f"{refused}/{refused} unauthorized attempts refused (of {attempts}; the read-only "
        "token's reads and list allowed), wrong tokens closed 1008, HTTP 3/3 answered 401; cache directory byte-identical; "
        f"0 of {len(server_records)} server log lines (DEBUG) and 0 replies contain a token; foreign Origin 403",
    )


def test_authorizer_for_http() -> None:
    """What the HTTP handler calls: the token from the Authorization header."""
    authorizer = Authorizer(auth_config())
    bearer = token_from_header(f"Bearer {READER}")
    authorizer.authorize(bearer, "GET", "existing")
    with pytest.raises(UnauthorizedError):
        authorizer.authorize(bearer, "PUT", "existing")
    basic = base64.b64encode(f"anyone:{WRITER}".encode()).decode()
    authorizer.authorize(token_from_header(f"Basic {basic}"), "PUT", "x")
    for header in (None, "", "Bearer", "Basic !!", "Token abc", f"Bearer {WRONG}"):
        with pytest.raises(UnauthorizedError) as info:
            authorizer.authorize(token_from_header(header), "GET", "existing")
        assert WRONG not in str(info.value)
    Authorizer(AuthConfig()).authorize(None, "DELETE", "x")  # access control off
