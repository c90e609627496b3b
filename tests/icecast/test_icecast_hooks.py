"""URL listener auth against a real (tiny) HTTP hook server, as Icecast's
``<authentication type="url">`` calls it."""

from __future__ import annotations

import base64
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

import attrs
import h11
import trio
from icecast_helpers import (
    MP3_FRAME,
    connect,
    live_source,
    read_head,
    running_server,
)

from mmstream.server import RunningServer


@attrs.define
class HookServer:
    """Answers ``listener_add`` as ``mode`` says and records every call."""

    port: int = 0
    mode: str = "allow"
    calls: list[dict[str, str]] = attrs.Factory(list)
    called: trio.Event = attrs.Factory(trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth.php"

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        self.calls.append(form)
        self.called.set()
        self.called = trio.Event()
        headers = [("content-length", "0")]
        status = 200
        if form["action"] == "listener_add":
            match self.mode:
                case "allow":
                    headers.append(("icecast-auth-user", "1"))
                case "wrong-status":
                    status = 403
                    headers.append(("icecast-auth-user", "1"))
                case "slow":
                    await trio.sleep(30)
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        await stream.aclose()


@asynccontextmanager
async def hook_server() -> AsyncIterator[HookServer]:
    hooks = HookServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, hooks.handle, 0, host="127.0.0.1")
        )
        hooks.port = listeners[0].socket.getsockname()[1]
        yield hooks
        nursery.cancel_scope.cancel()


async def try_listen(server: RunningServer, auth: str = "") -> tuple[int, trio.SocketStream]:
    stream = await connect(server)
    await stream.send_all(
        f"GET /streams/live HTTP/1.1\r\nHost: radio.example:8000\r\n"
        f"User-Agent: TestPlayer/1.0\r\n{auth}\r\n".encode()
    )
    status, _, _ = await read_head(stream)
    return status, stream


@asynccontextmanager
async def live(tmp_path: Path, **icecast: object) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, **icecast) as server:
        source = await live_source(server, "live", MP3_FRAME * 4, content_type="audio/mpeg")
        yield server
        await source.aclose()


async def test_listener_add_admits_and_listener_remove_hears_the_leave(tmp_path: Path) -> None:
    async with hook_server() as hooks:
        settings = {"listener_add": hooks.url, "listener_remove": hooks.url}
        async with live(tmp_path, **settings) as server:
            basic = base64.b64encode(b"alice:secret").decode()
            status, listener = await try_listen(server, f"Authorization: Basic {basic}\r\n")
            assert status == 200
            add = hooks.calls[0]
            assert add["action"] == "listener_add"
            assert add["mount"] == "/streams/live"
            assert add["ip"] == "127.0.0.1"
            assert add["agent"] == "TestPlayer/1.0"
            assert (add["server"], add["port"]) == ("radio.example", "8000")
            assert (add["user"], add["pass"]) == ("alice", "secret")
            assert add["client"].isdigit()
            called = hooks.called
            await listener.aclose()
            with trio.fail_after(5):
                await called.wait()
            remove = hooks.calls[1]
            assert remove["action"] == "listener_remove"
            assert remove["client"] == add["client"] and remove["duration"].isdigit()


async def test_a_hook_that_says_no_keeps_the_listener_out(tmp_path: Path) -> None:
    async with hook_server() as hooks:
        await _refused_by(hooks, tmp_path)


async def _refused_by(hooks: HookServer, tmp_path: Path) -> None:
    async with live(tmp_path, listener_add=hooks.url, listener_remove=hooks.url) as server:
        for mode in ("deny", "wrong-status"):
            hooks.mode = mode
            status, listener = await try_listen(server)
            assert status == 401, mode
            await listener.aclose()
        # Refused listeners were never admitted: no listener_remove for them.
        assert [call["action"] for call in hooks.calls] == ["listener_add"] * 2


async def test_a_slow_or_missing_hook_follows_the_policy(tmp_path: Path) -> None:
    async with hook_server() as hooks:
        hooks.mode = "slow"
        async with live(tmp_path, listener_add=hooks.url, auth_timeout=0.3) as server:
            assert (await try_listen(server))[0] == 401  # deny, as Icecast
        async with live(
            tmp_path / "2", listener_add=hooks.url, auth_timeout=0.3, auth_failure="allow"
        ) as server:
            assert (await try_listen(server))[0] == 200
        down = "http://127.0.0.1:9/auth"  # the discard port: nothing listens
        async with live(tmp_path / "3", listener_add=down, auth_failure="allow") as server:
            assert (await try_listen(server))[0] == 200
        async with live(tmp_path / "4", listener_add=down) as server:
            assert (await try_listen(server))[0] == 401
