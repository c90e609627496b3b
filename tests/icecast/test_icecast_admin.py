"""Icecast's status and admin API against Debian's icecast2 answering the same requests,
and read the way AzuraCast's and LibreTime's Icecast adapters read it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import trio
from icecast_helpers import (
    FFMPEG,
    free_port,
    live_source,
    needs,
    needs_ffmpeg,
    open_source,
    read_head,
    read_to_end,
    running_server,
    stop_process,
)

from mmstream.client import connect as connect_client
from mmstream.config import AuthConfig, TokenConfig
from mmstream.streams import StreamStatus

ICECAST = shutil.which("icecast2")
ADMIN = "Basic " + base64.b64encode(b"admin:hackme").decode()
ICECAST_XML = """<icecast>
  <limits><clients>100</clients><sources>4</sources><source-timeout>10</source-timeout>
    <burst-size>65535</burst-size></limits>
  <authentication><source-password>hackme</source-password>
    <admin-user>admin</admin-user><admin-password>hackme</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <paths><basedir>{dir}</basedir><logdir>{dir}</logdir><webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot><pidfile>{dir}/icecast.pid</pidfile></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog>
    <loglevel>2</loglevel></logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
"""


def _icecast_config() -> tuple[Path, int]:
    """A directory outside pytest's (0700, root's): as root icecast2 changes owner and must
    still reach its log directory."""
    workdir = Path(tempfile.mkdtemp(prefix="mmstream-icecast-"))
    workdir.chmod(0o777)
    port = free_port()
    owner = "<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
    config = ICECAST_XML.format(port=port, dir=workdir, owner=owner if os.geteuid() == 0 else "")
    (workdir / "icecast.xml").write_text(config)
    return workdir, port


@asynccontextmanager
async def running_icecast() -> AsyncIterator[int]:
    """Debian's icecast2 on a free port with a temporary config (as root it must change
    owner, as the bench does)."""
    workdir, port = _icecast_config()
    config = workdir / "icecast.xml"
    process = await trio.lowlevel.open_process([ICECAST or "icecast2", "-c", str(config)])
    try:
        with trio.fail_after(10):
            while not await _answers(port):  # noqa: ASYNC110
                await trio.sleep(0.05)
        yield port
    finally:
        await stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


async def _answers(port: int) -> bool:
    """Icecast accepts before it has dropped privileges and resets those connections."""
    try:
        status, _ = await get(port, "/status-json.xsl")
    except (OSError, trio.BrokenResourceError, EOFError):
        return False
    return status == 200


async def get(port: int, target: str, auth: str | None = ADMIN) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    extra = f"Authorization: {auth}\r\n" if auth else ""
    await stream.send_all(
        f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
    )
    status, _, rest = await read_head(stream)
    return status, await read_to_end(stream, rest)


async def listen(port: int, path: str, agent: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET {path} HTTP/1.0\r\nUser-Agent: {agent}\r\n\r\n".encode())
    status, _, _ = await read_head(stream)
    assert status == 200
    return stream


async def push(port: int, mount: str, mp3: Path) -> None:
    await trio.run_process(
        [FFMPEG or "ffmpeg", "-loglevel", "error", "-re", "-i", str(mp3), "-c", "copy",
         "-f", "mp3", "-content_type", "audio/mpeg", "-ice_name", "My Radio",
         "-ice_description", "desc here", "-ice_genre", "rock", "-ice_url",
         "http://example.org", f"icecast://source:hackme@127.0.0.1:{port}{mount}"],
        check=False,
    )  # fmt: skip


def azuracast_mounts(payload: bytes) -> dict[str, dict[str, Any]]:
    """How AzuraCast's nowplaying library reads /status-json.xsl (src/Adapter/Icecast.php:
    ``key($sources) === 0 ? $sources : [$sources]``, then ``parse_url(listenurl, PATH)``)."""
    sources = json.loads(payload)["icestats"]["source"]
    rows = sources if isinstance(sources, list) else [sources]
    return {urlparse(row["listenurl"]).path: row for row in rows}


def libretime_listeners(payload: bytes) -> dict[str, int]:
    """How LibreTime's playout reads /admin/stats.xml (libretime_playout/history/stats.py)."""
    root = ET.fromstring(payload)
    stats = {}
    for source in root.iter("source"):
        mount = source.get("mount")
        if mount is None:
            continue
        found = source.find("listeners")
        stats[mount.lstrip("/")] = 0 if found is None else int(found.text or "")
    return stats


def _types(row: dict[str, Any]) -> dict[str, str]:
    return {name: type(value).__name__ for name, value in row.items()}


@needs(ICECAST, "icecast2", "icecast2")
@needs_ffmpeg
async def test_the_same_answers_as_debians_icecast2(tmp_path: Path) -> None:
    mp3 = tmp_path / "a.mp3"
    await trio.run_process(
        [FFMPEG or "ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=30",
         "-c:a", "libmp3lame", "-b:a", "128k", str(mp3)]
    )  # fmt: skip
    async with (
        running_icecast() as ice,
        running_server(tmp_path) as server,
        trio.open_nursery() as nursery,
    ):
        ours = server.port
        nursery.start_soon(push, ice, "/streams/live", mp3)
        nursery.start_soon(push, ours, "/streams/live", mp3)
        with trio.fail_after(15):
            for port in (ice, ours):
                while b'"listenurl"' not in (await get(port, "/status-json.xsl"))[1]:  # noqa: ASYNC110
                    await trio.sleep(0.1)
        listeners = [await listen(port, "/streams/live", "TestAgent/1.0") for port in (ice, ours)]
        for port in (ice, ours):
            status, body = await get(
                port, "/admin/metadata?mount=/streams/live&mode=updinfo&song=Artist%20-%20Song"
            )
            assert status == 200 and b"<return>1</return>" in body
        with trio.fail_after(10):  # Icecast's stats take the title a moment later
            while b'"title"' not in (await get(ice, "/status-json.xsl"))[1]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        answers = {}
        for target in ("/status-json.xsl", "/admin/stats", "/admin/listclients?mount=/streams/live",
                       "/admin/listmounts"):  # fmt: skip
            (s1, theirs), (s2, mine) = await get(ice, target), await get(ours, target)
            assert s1 == s2 == 200, (target, theirs, mine)
            answers[target] = theirs, mine

        theirs, mine = answers["/status-json.xsl"]
        their_stats, my_stats = json.loads(theirs)["icestats"], json.loads(mine)["icestats"]
        assert list(their_stats) == list(my_stats)
        assert isinstance(my_stats["source"], dict)  # one source: an object, as Icecast
        assert _types(their_stats["source"]) == _types(my_stats["source"])
        assert list(their_stats["source"]) == list(my_stats["source"])
        for row in (their_stats["source"], my_stats["source"]):
            assert row["title"] == "Artist - Song" and row["listeners"] == 1
        assert azuracast_mounts(mine)["/streams/live"]["title"] == "Artist - Song"

        theirs, mine = answers["/admin/stats"]
        their_root, my_root = ET.fromstring(theirs), ET.fromstring(mine)
        assert [c.tag for c in their_root] == [c.tag for c in my_root]
        their_source, my_source = their_root.find("source"), my_root.find("source")
        assert their_source is not None and my_source is not None
        assert [c.tag for c in their_source] == [c.tag for c in my_source]
        assert libretime_listeners(mine) == libretime_listeners(theirs) == {"streams/live": 1}

        theirs, mine = answers["/admin/listclients?mount=/streams/live"]
        their_listener = ET.fromstring(theirs).find("source/listener")
        my_listener = ET.fromstring(mine).find("source/listener")
        assert their_listener is not None and my_listener is not None
        assert [c.tag for c in their_listener] == [c.tag for c in my_listener]
        assert my_listener.findtext("IP") == "127.0.0.1"
        assert my_listener.findtext("UserAgent") == "TestAgent/1.0"
        assert ET.fromstring(mine).findtext("source/Listeners") == "1"

        theirs, mine = answers["/admin/listmounts"]
        assert [c.tag for c in ET.fromstring(theirs).iter()] == [
            c.tag for c in ET.fromstring(mine).iter()
        ]
        for listener in listeners:
            await listener.aclose()
        nursery.cancel_scope.cancel()


async def test_killclient_and_killsource(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await live_source(
            server, "radio", b"\xff\xfb\x90\x64" + bytes(413), content_type="audio/mpeg"
        )
        listener = await listen(server.port, "/streams/radio", "doomed")
        status, body = await get(server.port, "/admin/listclients?mount=/streams/radio")
        client_id = ET.fromstring(body).findtext("source/listener/ID")
        assert status == 200 and client_id is not None
        status, body = await get(
            server.port, f"/admin/killclient?mount=/streams/radio&id={client_id}"
        )
        assert (status, b"removed" in body) == (200, True)
        with trio.fail_after(5):
            await read_to_end(listener)  # disconnected
        status, _ = await get(server.port, f"/admin/killclient?mount=/streams/radio&id={client_id}")
        assert status == 404
        status, body = await get(server.port, "/admin/killsource?mount=/streams/radio")
        assert (status, b"Source Removed" in body) == (200, True)
        with trio.fail_after(5):
            await read_to_end(source)
        # As a dropped source: the stream stays live, and a new source resumes it.
        assert server.manager.stat("radio").status is StreamStatus.UPLOADING
        assert (await get(server.port, "/admin/killsource?mount=/streams/radio"))[0] == 404


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/admin/listclients", 400),
        ("/admin/listclients?mount=/radio", 400),
        ("/admin/listclients?mount=/streams/a%2F..%2Fb", 400),
        ("/admin/listclients?mount=/streams/nope", 404),
        ("/admin/listclients?mount=/streams/done", 404),  # not live
        ("/admin/killclient?mount=/streams/radio", 400),
        ("/admin/killclient?mount=/streams/radio&id=x1", 400),
        ("/admin/killclient?mount=/streams/radio&id=99999999999999999999999", 400),
        ("/admin/killclient?mount=/streams/radio&id=42", 404),
        ("/admin/killsource?mount=/streams/ws", 404),  # a WebSocket upload: no source
        ("/admin/listclients?mount=" + "x" * 20000, 413),
        ("/admin/listclients?mount=%FF%FE", 400),
    ],
)
async def test_hostile_admin_requests_get_a_clean_4xx(
    tmp_path: Path, target: str, status: int
) -> None:
    async with running_server(tmp_path) as server:
        async with connect_client(server.url) as client:
            await client.create("ws")
            await client.upload("done", b"x")
        source = await open_source(server, "radio", content_type="audio/mpeg")
        got, body = await get(server.port, target)
        assert got == status, body
        assert b"<return>0</return>" in body
        await source.aclose()


async def test_admin_needs_the_admin_scope_and_status_shows_what_the_caller_may_read(
    tmp_path: Path,
) -> None:
    auth = AuthConfig(
        tokens=(
            TokenConfig("a" * 16, scopes=("admin",)),
            TokenConfig("w" * 16, scopes=("read", "write")),
            TokenConfig("o" * 16, scopes=("read",), streams="other"),
        )
    )

    def basic(token: str) -> str:
        return "Basic " + base64.b64encode(f"admin:{token * 16}".encode()).decode()

    async with running_server(tmp_path, auth) as server:
        stream = await open_source(
            server, "radio", content_type="audio/mpeg", authorization="Bearer " + "w" * 16
        )
        for target in ("/admin/stats", "/admin/stats.xml", "/admin/listmounts",
                       "/admin/listclients?mount=/streams/radio"):  # fmt: skip
            assert (await get(server.port, target, None))[0] == 401
            assert (await get(server.port, target, basic("w")))[0] == 401
            assert (await get(server.port, target, basic("a")))[0] == 200
        shown = json.loads((await get(server.port, "/status-json.xsl", basic("w")))[1])
        assert urlparse(shown["icestats"]["source"]["listenurl"]).path == "/streams/radio"
        for token in (None, basic("o")):
            hidden = json.loads((await get(server.port, "/status-json.xsl", token))[1])
            assert "source" not in hidden["icestats"]
        await stream.aclose()
