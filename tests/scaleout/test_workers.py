"""``mmstream serve --workers N``: real workers, real HAProxy, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from scaleout_helpers import alive, held_ports, needs_haproxy

from mmstream.client import connect
from mmstream.errors import MmstreamError
from mmstream.scaleout import BalancerOptions, Endpoint, plan_workers, render_haproxy_config

pytestmark = pytest.mark.slow


@pytest.fixture
def base() -> Iterator[int]:
    """Ports held for the test: the two workers' (``base``, ``base + 1``) and HAProxy's."""
    with held_ports(3) as first:
        yield first


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


class Lines:
    """Collects a process's stderr lines; ``wait_for`` returns once one contains a text."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def collect(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while chunk := await stream.receive_some():
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            self.lines += [line.decode() for line in done]
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, text: str) -> str:
        while True:
            for line in self.lines:
                if text in line:
                    return line
            await self._changed.wait()


async def upload(url: str, stream: str) -> None:
    async with connect(url, stream=stream) as client:
        await client.upload(stream, stream.encode() * 1000)


async def read(url: str, stream: str) -> bytes:
    async with connect(url, stream=stream) as client:
        return await client.read(stream)


@needs_haproxy
async def test_workers_behind_haproxy_restart_with_their_streams_and_stop_on_sigterm(
    tmp_path: Path, base: int
) -> None:
    lb = base + 2
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "mmstream", "serve", "--workers", "2", "--host", "127.0.0.1"]
    argv += ["--port", str(base), "--cache-dir", str(cache), "--haproxy", f"127.0.0.1:{lb}"]
    argv += ["--log-level", "WARNING"]
    proc = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = Lines()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stderr.collect, proc.stderr)
            with trio.fail_after(30):
                await stderr.wait_for("cluster ready")
            workers = plan_workers(2, host="127.0.0.1", base_port=base, cache_dir=cache)
            options = BalancerOptions(bind=Endpoint("127.0.0.1", lb), relay_listeners=True)
            expected = render_haproxy_config([w.node for w in workers], options)
            assert (cache / "haproxy.cfg").read_text() == expected

            url = f"ws://127.0.0.1:{lb}"
            ids = [f"w{i}" for i in range(12)]
            for stream in ids:
                await upload(url, stream)
            on_node0 = [s for s in ids if (cache / "node-0" / f"{s}.data").exists()]
            on_node1 = [s for s in ids if (cache / "node-1" / f"{s}.data").exists()]
            assert sorted(on_node0 + on_node1) == sorted(ids) and on_node0 and on_node1

            (first,) = [p for p in children_of(proc.pid) if str(base) in cmdline(p)]
            os.kill(first, signal.SIGKILL)
            with trio.fail_after(20):
                await stderr.wait_for(f"node-0 (pid {first}) killed by SIGKILL")
                await stderr.wait_for("restarting node-0")
                # Back from the same cache directory, with its streams.
                while True:
                    try:
                        assert await read(url, on_node0[0]) == on_node0[0].encode() * 1000
                        break
                    except MmstreamError:  # not-found or refused until it is back
                        await trio.sleep(0.1)
            for stream in ids:
                assert await read(url, stream) == stream.encode() * 1000
            children = children_of(proc.pid)
            assert len(children) == 3 and first not in children  # two workers and HAProxy

            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                assert await proc.wait() == 0
            assert not any(alive(pid) for pid in children)
    finally:
        for pid in children_of(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        await proc.wait()


async def test_workers_without_haproxy_print_its_config(tmp_path: Path, base: int) -> None:
    cache = tmp_path / "c"
    argv = [sys.executable, "-m", "mmstream", "serve", "--workers", "2", "--host", "127.0.0.1"]
    argv += ["--port", str(base), "--cache-dir", str(cache), "--log-level", "WARNING"]
    argv += ["--haproxy-sources", "127.0.0.1:8000"]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    workers = plan_workers(2, host="127.0.0.1", base_port=base, cache_dir=cache)
    options = BalancerOptions(relay_listeners=True, source_bind=Endpoint("127.0.0.1", 8000))
    expected = render_haproxy_config([w.node for w in workers], options).encode()
    try:
        stderr = Lines()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stderr.collect, proc.stderr)
            out = b""
            with trio.fail_after(30):
                while len(out) < len(expected):
                    out += await proc.stdout.receive_some()
                await stderr.wait_for("2 workers ready")
            assert out == expected
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(20):
                assert await proc.wait() == 0
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--haproxy"],
        ["serve", "--haproxy-config", "x.cfg"],
        ["serve", "--haproxy-sources", "127.0.0.1:8000"],
        ["serve", "--workers", "2", "--port", "9001", "--haproxy-sources", "8000"],
        ["serve", "--workers", "2", "--port", "0"],
        ["serve", "--workers", "0", "--port", "9001"],
        ["serve", "--workers", "2", "--port", "9001", "--haproxy", "nowhere"],
    ],
)
def test_bad_worker_options_are_one_line(argv: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mmstream", *argv, "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mmstream: error: ") and result.stderr.count("\n") == 1
