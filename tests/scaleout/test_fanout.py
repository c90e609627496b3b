"""``ls`` across nodes: merging, and ``mmstream ls --nodes`` against real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from scaleout_helpers import free_ports

from mmstream.client import connect
from mmstream.errors import InvalidArgumentError
from mmstream.protocol import StreamStat
from mmstream.scaleout import (
    Child,
    Endpoint,
    RestartPolicy,
    Supervisor,
    Worker,
    merge_listings,
    node_urls,
    serve_argv,
)


def stat(stream: str, size: int = 0) -> StreamStat:
    return StreamStat(
        stream=stream,
        status="ready",
        content_type="audio/wav",
        size=size,
        durable_offset=size,
        created_at=1.0,
        last_accessed_at=1.0,
    )


def test_node_urls() -> None:
    assert node_urls("a:1, ws://b:2,wss://c") == ("ws://a:1", "ws://b:2", "wss://c")
    for bad in ("", "a:1,,b:2", "a:1,ws://a:1"):
        with pytest.raises(InvalidArgumentError):
            node_urls(bad)


def test_merge_sorts_by_id_and_flags_an_id_on_two_nodes() -> None:
    listing = merge_listings(
        {"ws://b": [stat("x", 5), stat("a")], "ws://a": [stat("x", 7)], "ws://c": []},
        {"ws://d": "refused"},
    )
    assert [(p.stat.stream, p.node, p.also_on) for p in listing.streams] == [
        ("a", "ws://b", ()),
        ("x", "ws://a", ("ws://b",)),
        ("x", "ws://b", ("ws://a",)),
    ]
    assert listing.failures == {"ws://d": "refused"}


@asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[list[str]]:
    ports = free_ports(2)
    workers = [
        Worker(i, Endpoint("127.0.0.1", p), tmp_path / f"node-{i}") for i, p in enumerate(ports)
    ]
    children = [Child(w.node.name, serve_argv(w, log_level="WARNING"), w.listen) for w in workers]
    supervisor = Supervisor(children, RestartPolicy(restart=False, ready_timeout=20))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            yield [f"ws://127.0.0.1:{p}" for p in ports]
        finally:
            supervisor.stop()


async def put(url: str, stream: str, data: bytes) -> None:
    async with connect(url, stream=stream) as client:
        await client.upload(stream, data)


async def ls_nodes(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "mmstream", "ls", "--nodes", *args]
    return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


async def test_ls_nodes_lists_every_node_and_reports_a_dead_one(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        await put(a, "one", b"1")
        await put(b, "two", b"22")
        await put(a, "both", b"333")
        await put(b, "both", b"4444")  # as after an outage: the same id on two nodes

        result = await ls_nodes(f"{a},{b}")
        assert result.returncode == 0, result.stderr
        lines = [line.split() for line in result.stdout.decode().splitlines()]
        assert lines[0] == ["STREAM", "STATUS", "SIZE", "NODE"]
        both = sorted(
            [
                ["both", "ready", "3", a, "ALSO", "ON", b],
                ["both", "ready", "4", b, "ALSO", "ON", a],
            ],
            key=lambda row: row[3],
        )
        assert lines[1:] == [*both, ["one", "ready", "1", a], ["two", "ready", "2", b]]

        dead = f"127.0.0.1:{free_ports(1)[0]}"
        result = await ls_nodes(f"{a.removeprefix('ws://')},{dead}", "--json")
        assert result.returncode == 1
        rows = json.loads(result.stdout)
        assert [(r["stream"], r["node"], r["also_on"]) for r in rows] == [
            ("both", a, []),
            ("one", a, []),
        ]
        err = result.stderr.decode()
        assert err.startswith(f"mmstream: ws://{dead}: ") and err.count("\n") == 1


async def test_ls_nodes_refuses_a_bad_list() -> None:
    result = await ls_nodes("a:1,,b:2")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("mmstream: error: --nodes: ")
