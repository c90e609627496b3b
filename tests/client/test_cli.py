"""The ``mmstream`` client commands, run as real subprocesses against a real server."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from mmstream.client import connect
from mmstream.server import RunningServer

MiB = 1 << 20


async def mmstream(
    server: RunningServer | str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    url = server if isinstance(server, str) else server.url
    env = {**os.environ, "MMSTREAM_URL": url}
    return await trio.run_process(
        [sys.executable, "-m", "mmstream", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmstream: error:"), result.stderr
    return lines[0]


async def test_put_get_50_mib_round_trip(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "take.wav"
    source.write_bytes(random.Random(0).randbytes(50 * MiB))
    put = await mmstream(server, "put", str(source), "--stream", "take", "--chunk-size", "65536")
    assert put.returncode == 0, put.stderr
    assert sha256(source) in put.stderr.decode()
    out = tmp_path / "back.wav"
    got = await mmstream(server, "get", "take", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert sha256(out) == sha256(source)
    stat = json.loads((await mmstream(server, "stat", "take", "--json")).stdout)
    assert stat["content_type"] == "audio/x-wav"
    assert (stat["status"], stat["size"], stat["sha256"]) == ("ready", 50 * MiB, sha256(source))


async def test_get_ranges_equal_the_files_slices(one_server: RunningServer, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * MiB)
    put = await mmstream(one_server, "put", "-", "--stream", "ranges", stdin=data)
    assert put.returncode == 0, put.stderr
    rng = random.Random(2)
    for _ in range(3):
        offset, length = rng.randrange(len(data)), rng.randrange(MiB)
        got = await mmstream(
            one_server, "get", "ranges", "--offset", str(offset), "--length", str(length)
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout == data[offset : offset + length]
    tail_end = await mmstream(one_server, "get", "ranges", "--offset", str(len(data) - 3))
    assert tail_end.stdout == data[-3:]
    past = await mmstream(one_server, "get", "ranges", "--offset", str(len(data) + 1))
    assert "past the end" in one_line_error(past)


async def test_follow_a_live_pipe_upload(one_server: RunningServer, tmp_path: Path) -> None:
    """`get --follow` started before the data, `put -` fed from a pipe piece by piece."""
    data = random.Random(3).randbytes(2 * MiB)
    assert (
        await mmstream(one_server, "put", "-", "--stream", "live", "--no-finalize")
    ).returncode == 0
    followed = tmp_path / "followed.bin"
    async with trio.open_nursery() as nursery:
        follow = await trio.lowlevel.open_process(
            [sys.executable, "-m", "mmstream", "get", "live", "--follow", "-o", str(followed),
             "--url", one_server.url]
        )  # fmt: skip
        put = await trio.lowlevel.open_process(
            [sys.executable, "-m", "mmstream", "put", "-", "--stream", "live", "--resume",
             "--url", one_server.url],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert put.stdin is not None
        for start in range(0, len(data), 256 * 1024):
            await put.stdin.send_all(data[start : start + 256 * 1024])
            await trio.sleep(0.01)
        await put.stdin.aclose()
        assert await put.wait() == 0
        assert await follow.wait() == 0
        nursery.cancel_scope.cancel()
    assert followed.read_bytes() == data


async def test_follow_waits_for_a_stream_not_created_yet(
    one_server: RunningServer, tmp_path: Path
) -> None:
    """The second terminal often starts first: `get --follow` waits for the upload to begin."""
    data = random.Random(4).randbytes(300 * 1024)
    source = tmp_path / "early.bin"
    source.write_bytes(data)
    followed = tmp_path / "followed-early.bin"
    follow = await trio.lowlevel.open_process(
        [sys.executable, "-m", "mmstream", "get", "early", "--follow", "-o", str(followed),
         "--url", one_server.url],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    await trio.sleep(1.0)  # the follower is up and waiting before the stream exists
    assert follow.returncode is None
    put = await mmstream(one_server, "put", str(source), "--stream", "early")
    assert put.returncode == 0, put.stderr
    with trio.fail_after(20):
        assert await follow.wait() == 0
    assert followed.read_bytes() == data


async def test_killed_upload_then_put_resume_yields_the_exact_file(
    one_server: RunningServer, tmp_path: Path
) -> None:
    data = random.Random(4).randbytes(12 * MiB)
    source = tmp_path / "recording.bin"
    source.write_bytes(data)
    put = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "mmstream",
            "put",
            "-",
            "--stream",
            "crash",
            "--url",
            one_server.url,
        ],
        stdin=subprocess.PIPE,
    )
    assert put.stdin is not None
    await put.stdin.send_all(data[: 5 * MiB])
    with trio.fail_after(20):
        await one_server.manager.wait_for_data("crash", MiB)
    put.send_signal(signal.SIGKILL)
    await put.wait()
    await put.stdin.aclose()
    partial = one_server.manager.stat("crash").size
    assert 0 < partial < len(data)

    again = await mmstream(one_server, "put", str(source), "--stream", "crash")
    assert "--resume" in one_line_error(again)
    resumed = await mmstream(one_server, "put", str(source), "--stream", "crash", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    out = tmp_path / "out.bin"
    assert (await mmstream(one_server, "get", "crash", "-o", str(out))).returncode == 0
    assert out.read_bytes() == data


async def test_put_reserves_the_files_size_not_the_default(
    one_server: RunningServer, tmp_path: Path
) -> None:
    """``put`` tells the server the file's size (``create``'s ``size_hint``): a clip
    reserves a clip's worth, not ``initial_size`` (1 MiB here)."""
    clip = tmp_path / "clip.ogg"
    clip.write_bytes(os.urandom(20_000))
    put = await mmstream(one_server, "put", str(clip), "--stream", "clip", "--no-finalize")
    assert put.returncode == 0, put.stderr
    stat = json.loads((await mmstream(one_server, "stat", "clip", "--json")).stdout)
    assert (stat["size"], stat["reserved"]) == (20_000, 20_480)


#: What no client command may import: the server, its storage and metrics, the config and
#: scale-out machinery, the server side of the WebSocket libraries.
SERVER_SIDE = (
    "mmstream.server", "mmstream.streams", "mmstream.metrics", "mmstream.config",
    "mmstream.registry", "mmstream.scaleout", "mmstream._serve_command", "mmstream.cache",
    "mmstream.web", "prometheus_client", "trio_websocket", "wsproto", "h11",
    "websockets.server", "websockets.trio.server", "websockets.asyncio", "websockets.legacy",
)  # fmt: skip

#: Runs ``mmstream`` as ``python -m mmstream`` does, then writes the modules it imported.
_MODULES_AFTER = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["mmstream", *sys.argv[2:]]
try:
    runpy.run_module("mmstream", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


@pytest.mark.parametrize("command", ["put", "get", "stat"])
async def test_client_commands_import_nothing_of_the_server(
    one_server: RunningServer, tmp_path: Path, command: str
) -> None:
    clip = tmp_path / "clip.ogg"
    clip.write_bytes(os.urandom(16 * 1024))
    args = {"put": ["put", str(clip), "--stream", "clip"], "get": ["get", "clip", "-o", str(tmp_path / "back")],
            "stat": ["stat", "clip"]}[command]  # fmt: skip
    if command != "put":
        assert (await mmstream(one_server, "put", str(clip), "--stream", "clip")).returncode == 0
    report = tmp_path / "modules.json"
    ran = await trio.run_process(
        [sys.executable, "-c", _MODULES_AFTER, str(report), *args, "--url", one_server.url],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    result = json.loads(report.read_text())
    assert result["code"] == 0, ran.stderr
    loaded = [m for m in result["modules"] if m.startswith(SERVER_SIDE)]
    assert loaded == [], f"mmstream {command} imported {loaded}"


async def test_help_lists_every_command_and_version_reads_the_metadata() -> None:
    """The whole parser is still built when no command is named."""
    shown = await mmstream("ws://127.0.0.1:9", "--help")
    assert shown.returncode == 0
    for command in ("backends", "serve", "put", "get", "stat", "ls", "rm", "haproxy-config"):
        assert command in shown.stdout.decode()
    version = await mmstream("ws://127.0.0.1:9", "--version")
    assert version.returncode == 0 and version.stdout.decode().startswith("mmstream 0")
    typo = await mmstream("ws://127.0.0.1:9", "putt")
    assert typo.returncode == 2 and "invalid choice: 'putt'" in typo.stderr.decode()


async def test_stat_ls_rm(one_server: RunningServer) -> None:
    for name in ("b", "a"):
        put = await mmstream(one_server, "put", "-", "--stream", name, "--content-type", "audio/ogg",
                             stdin=name.encode() * 10)  # fmt: skip
        assert put.returncode == 0, put.stderr
    listed = json.loads((await mmstream(one_server, "ls", "--json")).stdout)
    assert [(s["stream"], s["size"], s["content_type"]) for s in listed] == [
        ("a", 10, "audio/ogg"),
        ("b", 10, "audio/ogg"),
    ]
    table = (await mmstream(one_server, "ls")).stdout.decode().splitlines()
    assert table[0].split() == ["STREAM", "STATUS", "SIZE", "CONTENT-TYPE", "CREATED"]
    assert table[1].split()[:3] == ["a", "ready", "10"]
    human = (await mmstream(one_server, "stat", "a")).stdout.decode()
    assert "status            ready" in human and "sha256" in human
    assert "started_at        20" in human and "duration          -" in human  # not indexed
    assert (await mmstream(one_server, "rm", "a")).returncode == 0
    assert "no stream" in one_line_error(await mmstream(one_server, "stat", "a"))
    assert "invalid stream id" in one_line_error(await mmstream(one_server, "rm", "../a"))
    async with connect(one_server.url) as client:
        assert [s.stream for s in await client.list()] == ["b"]


async def test_a_failed_get_leaves_the_output_file_as_it_was(
    one_server: RunningServer, tmp_path: Path
) -> None:
    """-o FILE is written beside FILE and renamed over it only when the download is whole:
    a failure (here: no such stream, an offset past the end) keeps FILE and leaves no
    temporary file behind."""
    where = tmp_path / "out"
    where.mkdir()
    out = where / "keep.bin"
    out.write_bytes(b"precious")
    out.chmod(0o640)
    assert "no stream" in one_line_error(await mmstream(one_server, "get", "nope", "-o", str(out)))
    put = await mmstream(one_server, "put", "-", "--stream", "short", stdin=b"0123456789")
    assert put.returncode == 0, put.stderr
    past = await mmstream(one_server, "get", "short", "--offset", "99", "-o", str(out))
    assert "past the end" in one_line_error(past)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in where.iterdir()) == ["keep.bin"]
    # A whole download replaces it; a new file gets the usual permissions (umask).
    got = await mmstream(one_server, "get", "short", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == b"0123456789"
    assert out.stat().st_mode & 0o777 == 0o640  # its mode kept
    fresh = where / "fresh.bin"
    assert (await mmstream(one_server, "get", "short", "-o", str(fresh))).returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in where.iterdir()) == ["fresh.bin", "keep.bin"]
    # Not a regular file (a device, a pipe): written in place, never renamed over.
    assert (await mmstream(one_server, "get", "short", "-o", os.devnull)).returncode == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)  # still the device


async def test_an_empty_or_overlong_id_is_an_invalid_id(one_server: RunningServer) -> None:
    """Not "HTTP 404": the bound endpoint's path cannot carry such an id, and saying so is
    the client's job."""
    for stream in ("", "a" * 400):
        for args in (["put", "-", "--stream", stream], ["get", stream, "-o", os.devnull],
                     ["stat", stream], ["rm", stream]):  # fmt: skip
            line = one_line_error(await mmstream(one_server, *args, stdin=b"x"))
            assert "invalid stream id" in line and "404" not in line, (args, line)


async def test_errors_are_one_line_never_a_traceback(tmp_path: Path) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"ws://127.0.0.1:{port}"
    assert "connection refused" in one_line_error(await mmstream(dead, "ls"))
    assert "connection refused" in one_line_error(
        await mmstream(dead, "put", "-", "--stream", "x", stdin=b"x")
    )
    assert "No such file" in one_line_error(
        await mmstream(dead, "put", str(tmp_path / "none"), "--stream", "x")
    )
    assert "not a ws://" in one_line_error(await mmstream("ftp://nowhere", "ls"))


async def test_token_from_the_environment(nursery: trio.Nursery, tmp_path: Path) -> None:
    """With auth on, `put`/`ls` work with $MMSTREAM_TOKEN and fail in one line without it."""
    from mmstream.config import AuthConfig, CacheConfig, Config, ServerConfig, TokenConfig
    from mmstream.server import serve

    token = "cli-token-0123456789abcdef"
    config = Config(
        cache=CacheConfig(directory=tmp_path / "cache"),
        server=ServerConfig(port=0),
        auth=AuthConfig(tokens=(TokenConfig(token=token),)),
    )
    server: RunningServer = await nursery.start(serve, config)
    source = tmp_path / "a.bin"
    source.write_bytes(b"secret audio")
    refused = await mmstream(server, "put", str(source), "--stream", "a")
    assert "unauthorized" in one_line_error(refused) or "token" in one_line_error(refused)
    env = {**os.environ, "MMSTREAM_URL": server.url, "MMSTREAM_TOKEN": token}
    for args in (["put", str(source), "--stream", "a"], ["ls"]):
        done = await trio.run_process(
            [sys.executable, "-m", "mmstream", *args],
            capture_stdout=True, capture_stderr=True, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert b"a" in done.stdout
    assert token not in done.stderr.decode() + done.stdout.decode()


async def test_title_sets_a_live_stream_s_title_and_stat_shows_where_it_began(
    one_server: RunningServer,
) -> None:
    async with connect(one_server.url) as client:
        await client.create("radio", content_type="audio/mpeg")
        await client.append("radio", bytes(1000))
        stat = await client.set_title("First", "radio")
        assert [(t.title, t.offset) for t in stat.titles] == [("First", 1000)]
        got = await mmstream(one_server, "title", "radio", "Ünïcode - 'Second'")
        assert got.returncode == 0, got.stderr
        shown = await mmstream(one_server, "stat", "radio")
        assert "at byte 1000: First" in shown.stdout.decode()
        assert "Ünïcode - 'Second'" in shown.stdout.decode()
        await client.finalize("radio")
        assert "is ready" in one_line_error(await mmstream(one_server, "title", "radio", "x"))
        assert "no stream nope" in one_line_error(await mmstream(one_server, "title", "nope", "x"))
