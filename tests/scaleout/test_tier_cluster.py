"""Tiering with real processes: three nodes behind HAProxy sharing a bucket lose one node
and still serve its finished streams; a node killed during a multipart upload leaves no
half-visible object and copies the stream after its restart."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from scaleout_helpers import needs_haproxy, open_local_cluster, wait_for_states
from test_cluster import assert_readable, each, payload, upload
from tier_moto import MotoServer, free_port

from mmstream.cache import MiB
from mmstream.client import connect
from mmstream.config import TierConfig

pytestmark = [pytest.mark.slow]


def write_config(path: Path, tier: TierConfig, **extra: str) -> Path:
    lines = ["[tier]", "enabled = true", f'endpoint = "{tier.endpoint}"',
             f'bucket = "{tier.bucket}"', f'prefix = "{tier.prefix}"', "request_timeout = 5.0"]  # fmt: skip
    lines += [f"{key} = {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def wait_tiered(url: str, stream: str) -> None:
    async with connect(url, stream=stream) as client:
        with trio.fail_after(60):
            for _ in range(100_000):
                if (await client.stat(stream)).location != "local":
                    return
                await trio.sleep(0.05)


@needs_haproxy
async def test_a_lost_nodes_finished_streams_stay_readable_through_haproxy(
    tmp_path: Path, tier_config: TierConfig
) -> None:
    config = write_config(tmp_path / "mmstream.toml", tier_config)
    async with open_local_cluster(tmp_path, 3, node_config=config) as cluster:
        ids = [f"rec-{i:02d}" for i in range(24)]
        await each(ids, lambda s: upload(cluster.url, s))
        await each(ids, lambda s: wait_tiered(cluster.url, s))
        owner = {s: cluster.holders(s)[0] for s in ids}
        victim = max(range(3), key=lambda i: sum(1 for o in owner.values() if o == i))
        lost = [s for s in ids if owner[s] == victim]
        assert lost
        pid = cluster.pid(victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        opts = cluster.options
        with trio.fail_after(opts.check_interval * (opts.fall + 1) + 1.0):
            await wait_for_states(cluster, {f"node-{victim}": "DOWN"})
        # Its streams are served by the survivors from the bucket, byte for byte.
        await assert_readable(cluster.url, ids)
        for stream in lost[:4]:
            url = f"http://{cluster.balancer}/streams/{stream}"
            get = partial(httpx.get, url, headers={"Range": "bytes=100-4099"})
            reply = await trio.to_thread.run_sync(get)
            assert reply.status_code == 206
            assert reply.content == payload(stream)[100:4100]
            async with connect(cluster.url, stream=stream) as client:
                stat = await client.stat(stream)
            # Read twice by now (above): being brought back into a survivor's cache, or back.
            assert stat.location in ("remote", "local+remote")
            assert stat.sha256 == hashlib.sha256(payload(stream)).hexdigest()


async def wait_listening(port: int) -> None:
    with trio.fail_after(30):
        for _ in range(100_000):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                await trio.sleep(0.05)
            else:
                return


def serve_argv(config: Path, port: int, cache: Path) -> list[str]:
    return [sys.executable, "-m", "mmstream", "serve", "--config", str(config), "--port",
            str(port), "--cache-dir", str(cache), "--log-level", "WARNING"]  # fmt: skip


async def test_kill_9_during_a_multipart_upload_leaves_nothing_half_visible(
    tmp_path: Path, own_moto: MotoServer
) -> None:
    own_moto.create_bucket("crash")
    tier = TierConfig(enabled=True, endpoint=own_moto.endpoint, bucket="crash", prefix="p/")
    config = write_config(tmp_path / "mmstream.toml", tier, part_size='"5 MiB"')
    cache, port = tmp_path / "cache", free_port()
    data = os.urandom(96 * MiB + 5)
    node = await trio.lowlevel.open_process(serve_argv(config, port, cache))
    try:
        await wait_listening(port)
        async with connect(f"ws://127.0.0.1:{port}") as client:
            info = await client.upload("big", data)
        with trio.fail_after(60):
            for _ in range(100_000):
                if own_moto.uploads_in_progress("crash"):
                    break
                await trio.sleep(0.01)
        node.kill()  # SIGKILL in the middle of the multipart upload
        await node.wait()
    finally:
        if node.returncode is None:
            node.kill()
    assert node.returncode == -signal.SIGKILL
    assert own_moto.uploads_in_progress("crash")  # it was cut mid-way...
    assert own_moto.keys("crash") == []  # ...and nothing of it is visible
    # The restart uploads it again, whole.
    node = await trio.lowlevel.open_process(serve_argv(config, port, cache))
    try:
        await wait_listening(port)
        await wait_tiered(f"ws://127.0.0.1:{port}", "big")
        key = f"p/streams/big/{info.generation}.data"
        assert sorted(own_moto.keys("crash")) == ["p/streams/big.json", key]
        status, body = own_moto.request("GET", f"/crash/{key}")
        assert status == 200 and body == data
    finally:
        node.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            await node.wait()
        if node.returncode is None:
            node.kill()
