"""Test 1, crash: ``mmstream serve`` in a subprocess takes 20+ concurrent uploads and is
killed with SIGKILL at a random moment, round after round. After each restart every stream
whose finalize was acknowledged is READY with its sha256, every other stream holds a prefix
of what was sent (never a byte the client did not send) and at least every byte the server
acknowledged (``ack``), and resumes (append at the size ``stat`` reports) to completion,
byte-identical; resumes run under the next kill too. Half the servers sync every 50 ms, the
other half every 30 s: their acknowledged bytes past the durable offset are kept by their
checksum records alone."""

from __future__ import annotations

import hashlib
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
from soak import rounds

from mmstream.client import Client, connect
from mmstream.errors import MmstreamError

UPLOADS = 20
CHUNK = 16 * 1024


@attrs.define
class Upload:
    data: bytes
    #: The sha256 the server acknowledged at finalize, once it did.
    ready: str | None = None
    #: The largest size the server acknowledged (an ``ack`` or an append reply).
    acked: int = 0


@attrs.define
class Tally:
    kills: int = 0
    ready_checked: int = 0
    resumed: int = 0
    completed: int = 0
    uploads: int = 0
    #: Unfinished streams checked against their acknowledged size, and the bytes checked.
    acked_checked: int = 0
    acked_bytes: int = 0
    problems: list[str] = attrs.Factory(list)


async def start_server(cache: Path, log: Path, config: Path) -> tuple[trio.Process, str]:
    command = [sys.executable, "-m", "mmstream", "serve", "--config", str(config),
               "--port", "0", "--cache-dir", str(cache), "--log-level", "info"]  # fmt: skip
    logfile = trio.Path(log)
    start = (await logfile.stat()).st_size if await logfile.exists() else 0  # earlier runs
    with open(log, "ab") as out:  # noqa: ASYNC230  (a file the child process inherits)
        process = await trio.lowlevel.open_process(command, stderr=out, stdout=subprocess.DEVNULL)
    with trio.fail_after(30):
        while True:
            text = (await logfile.read_bytes())[start:]
            found = re.search(rb"listening on (ws://127\.0\.0\.1:\d+)", text)
            if found:
                return process, found.group(1).decode()
            if process.poll() is not None:
                raise AssertionError(f"server exited: {(await logfile.read_text())[-3000:]}")
            await trio.sleep(0.02)


#: Uploads at once per server: the last round resumes every unfinished one, which must stay
#: under the server's connections-per-address cap (256).
CONNECTIONS = trio.CapacityLimiter(100)


async def upload(url: str, sid: str, item: Upload, rng: random.Random) -> None:
    """Create (or resume) and finalize; a dead server ends the attempt quietly."""
    client: Client | None = None
    try:
        async with CONNECTIONS, connect(url) as client:
            stat = await client.upload(sid, chunks(item.data, rng), resume=True, chunk_size=CHUNK)
    except (MmstreamError, OSError):
        if client is not None:
            item.acked = max(item.acked, client.acknowledged)
        return  # the server was killed under us; the next round resumes
    item.ready = stat.sha256


def chunks(data: bytes, rng: random.Random) -> bytes:
    del rng
    return data


async def verify_and_resume(
    client: Client,
    url: str,
    items: dict[str, Upload],
    tally: Tally,
    nursery: trio.Nursery,
    *,
    read_all: bool,
) -> None:
    """Check every stream (READY ones by their sha256; their bytes too when ``read_all``)
    and start resuming the unfinished ones."""
    found = {s.stream: s for s in await client.list()}
    for sid, item in items.items():
        stat = found.get(sid)
        digest = hashlib.sha256(item.data).hexdigest()
        if item.ready is not None:
            tally.ready_checked += 1
            if stat is None or stat.status != "ready" or stat.sha256 != digest:
                tally.problems.append(f"{sid}: acknowledged READY, found {stat}")
            elif read_all and hashlib.sha256(await client.read(sid)).hexdigest() != digest:
                tally.problems.append(f"{sid}: READY bytes differ from what was sent")
            continue
        if item.acked:
            tally.acked_checked += 1
            tally.acked_bytes += item.acked
            if stat is None or stat.size < item.acked:
                size = None if stat is None else stat.size
                tally.problems.append(f"{sid}: {item.acked} bytes acknowledged, found {size}")
                continue
        if stat is not None:
            held = await client.read(sid) if stat.status != "error" else b""
            if stat.status == "error" or held != item.data[: len(held)]:
                tally.problems.append(f"{sid}: {stat.status}, bytes not a prefix of those sent")
                continue
            if stat.status == "ready":  # finalized, but the reply was lost in the kill
                item.ready = stat.sha256
                continue
        tally.resumed += stat is not None
        nursery.start_soon(upload, url, sid, item, random.Random(sid))


async def crash_lane(
    directory: Path, count: int, seed: int, tally: Tally, *, sync_interval: float
) -> int:
    """``count`` kill rounds against one cache directory, then a clean round that completes
    everything; returns the bytes uploaded."""
    rng = random.Random(seed)
    await trio.Path(directory).mkdir()
    cache, log, config = directory / "cache", directory / "server.log", directory / "c.toml"
    await trio.Path(config).write_text(
        # Small reservations: the last round resumes every unfinished upload at once, and
        # 64 MiB each would fill the 8 GiB quota (evictions and refusals, not crashes).
        f'[cache]\nsync_interval = {sync_interval}\ninitial_size = "256 KiB"\n'
        "[server]\nack_interval = 0.01\n"
    )
    items: dict[str, Upload] = {}
    sizes = 0
    for round_ in range(count + 1):
        last = round_ == count
        process, url = await start_server(cache, log, config)
        try:
            async with trio.open_nursery() as nursery:
                async with connect(url) as client:
                    await verify_and_resume(client, url, items, tally, nursery, read_all=last)
                if not last:
                    for n in range(UPLOADS):
                        sid = f"r{round_}-u{n}"
                        size = rng.randrange(1, 8) * CHUNK + rng.randrange(CHUNK)
                        items[sid] = Upload(rng.randbytes(size))
                        sizes += size
                        nursery.start_soon(upload, url, sid, items[sid], rng)
                    await trio.sleep(rng.uniform(0.02, 0.3))
                    process.send_signal(signal.SIGKILL)
                    tally.kills += 1
        finally:
            if process.poll() is None and not last:
                process.kill()
            with trio.move_on_after(10):
                if last:
                    process.send_signal(signal.SIGTERM)
                await process.wait()
        assert last or process.returncode == -signal.SIGKILL
    tally.completed += sum(item.ready is not None for item in items.values())
    tally.uploads += len(items)
    log_text = await trio.Path(log).read_text()
    assert "Traceback" not in log_text, log_text[-3000:]
    return sizes


async def test_kill_9_at_random_points(
    tmp_path: Path, figure: Callable[[str, str, str], None]
) -> None:
    """Four servers (own cache directories) side by side, each killed in turn."""
    lanes, count = 4, rounds(5, 25)
    tally = Tally()
    sizes: list[int] = []

    async def lane(n: int) -> None:
        interval = 0.05 if n % 2 else 30.0
        lane_dir = tmp_path / f"lane{n}"
        sizes.append(await crash_lane(lane_dir, count, 1234 + n, tally, sync_interval=interval))

    async with trio.open_nursery() as nursery:
        for n in range(lanes):
            nursery.start_soon(lane, n)
    assert tally.problems == []
    assert tally.completed == tally.uploads, "some uploads never completed"
    figure(
        "1. Crash",
        f"mmstream serve killed with SIGKILL at a random moment (20-300 ms into a round) "
        f"in {tally.kills} rounds (4 servers side by side, two syncing every 50 ms, two every "
        f"30 s) of {UPLOADS} concurrent uploads "
        f"({sum(sizes) / 2**20:.0f} MiB in all); resumes of earlier rounds' uploads run "
        "under the next kill",
        f"{tally.ready_checked} checks of acknowledged-READY streams: 100% kept their sha256; "
        f"{tally.acked_checked} checks of unfinished uploads ({tally.acked_bytes / 2**20:.0f} "
        "MiB acknowledged): 0 acknowledged bytes lost; "
        f"{tally.resumed} resumes from the size stat reported; {tally.completed}/"
        f"{tally.uploads} uploads completed byte-identical; 0 tracebacks in the server logs",
    )
