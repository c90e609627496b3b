"""The writer of test 4, run as a subprocess so that a SIGBUS shows as a signal exit.

    python fill_disk.py DIRECTORY BACKEND

DIRECTORY is a small (64 MiB) tmpfs. Three streams are stored READY (4 MiB each), then four
uploads write 1 MiB appends at once until the disk is full. Prints one JSON object: every
writer's error code, the keepers' sha256 before and after, and whether appends work again
once a failed upload is deleted.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import trio
import trio.lowlevel

from mmstream.cache import GiB, MiB
from mmstream.config import ByteSize, CacheConfig, MmapConfig
from mmstream.errors import MmstreamError
from mmstream.streams import StreamManager, open_stream_manager

KEEPERS = 3
WRITERS = 4


def payload(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def digest(manager: StreamManager, sid: str) -> str:
    size = manager.stat(sid).size
    return hashlib.sha256(await manager.read(sid, 0, size)).hexdigest()


async def main(directory: Path, backend: str) -> dict[str, object]:
    config = CacheConfig(
        directory=directory / "cache",
        backend=backend,
        initial_size=ByteSize(1 * MiB),
        max_cache_size=ByteSize(8 * GiB),  # the disk, not the quota, is the limit here
        mmap=MmapConfig(segment_size=ByteSize(16 * MiB)),
        sync_policy="interval",
        sync_interval=0.05,
    )
    errors: dict[str, str] = {}
    written: dict[str, int] = {}
    async with open_stream_manager(config) as manager:
        before = {}
        for n in range(KEEPERS):
            sid = f"keep{n}"
            await manager.create(sid)
            await manager.append(sid, payload(sid, 4 * MiB))
            await manager.finalize(sid)
            before[sid] = await digest(manager, sid)

        async def write(sid: str) -> None:
            await manager.create(sid)
            piece = payload(sid, 1 * MiB)
            try:
                while True:
                    written[sid] = await manager.append(sid, piece)
                    await trio.lowlevel.checkpoint()
            except MmstreamError as exc:
                errors[sid] = exc.code

        async with trio.open_nursery() as nursery:
            for n in range(WRITERS):
                nursery.start_soon(write, f"writer{n}")
        after = {sid: await digest(manager, sid) for sid in before}
        # Deleting a failed upload frees its space: another upload can go on.
        await manager.delete("writer0")
        survivor = "writer1"
        resumed = True
        try:
            await manager.append(survivor, payload("more", 512 * 1024))
        except MmstreamError as exc:
            resumed = exc.code  # type: ignore[assignment]
    return {
        "errors": errors,
        "written": written,
        "before": before,
        "after": after,
        "resumed_after_delete": resumed,
    }


if __name__ == "__main__":
    result = trio.run(main, Path(sys.argv[1]), sys.argv[2])
    print(json.dumps(result))
