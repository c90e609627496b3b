"""One scripted storage workload and the record of what the manager acknowledged, shared by
the power-cut and I/O-error tests; :func:`check_recovered` states what must survive."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path

import attrs

from mmstream.cache import KiB
from mmstream.config import ByteSize, CacheConfig, MmapConfig, SyncPolicy
from mmstream.errors import MmstreamError
from mmstream.streams import StreamManager, StreamStatus


def chunk(stream: str, index: int, size: int) -> bytes:
    """Bytes that say which stream and chunk they are, so a misplaced byte is caught."""
    seed = hashlib.sha256(f"{stream}/{index}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@attrs.define
class Acked:
    """What the manager told the client, per stream."""

    #: Bytes sent, whether or not acknowledged (recovered bytes must be a prefix of these).
    sent: dict[str, bytearray] = attrs.Factory(dict)
    #: The durable offset each stream had after its last successful append/flush.
    durable: dict[str, int] = attrs.Factory(dict)
    #: Streams whose finalize returned, with their sha256.
    ready: dict[str, str] = attrs.Factory(dict)
    #: Streams whose delete returned.
    deleted: set[str] = attrs.Factory(set)
    #: Streams whose delete was tried (an error reply leaves them present or gone).
    delete_tried: set[str] = attrs.Factory(set)
    #: Streams whose create returned.
    created: set[str] = attrs.Factory(set)


#: (operation, stream, argument): the workload, in order. Chunk sizes cross the 16 KiB
#: initial reservation, so growth (fallocate) happens too.
SCRIPT: list[tuple[str, str, int]] = [
    ("create", "a", 0),
    ("append", "a", 6 * KiB),
    ("append", "a", 14 * KiB),
    ("finalize", "a", 0),
    ("create", "b", 0),
    ("append", "b", 5 * KiB),
    ("flush", "b", 0),
    ("append", "b", 20 * KiB),
    ("create", "c", 0),
    ("append", "c", 3 * KiB),
    ("finalize", "c", 0),
    ("delete", "a", 0),
    ("append", "b", 1 * KiB),
    ("delete", "c", 0),
    ("create", "d", 0),
    ("append", "d", 2 * KiB),
]


def workload_config(
    directory: Path, backend: str, sync_policy: SyncPolicy = "always"
) -> CacheConfig:
    return CacheConfig(
        directory=directory,
        backend=backend,
        initial_size=ByteSize(16 * KiB),
        mmap=MmapConfig(segment_size=ByteSize(1024 * KiB)),
        sync_policy=sync_policy,
        sync_interval=3600.0,  # no background step: the step numbering is the script's
    )


async def run_script(
    manager: StreamManager,
    acked: Acked,
    *,
    on_result: Callable[[str, str, bool], None] | None = None,
) -> None:
    """Run :data:`SCRIPT`, recording acknowledgements; an operation that fails with an
    mmstream error is recorded as failed and the script goes on (a real client would)."""
    for index, (op, sid, size) in enumerate(SCRIPT):
        ok = True
        try:
            match op:
                case "create":
                    await manager.create(sid)
                    acked.created.add(sid)
                    acked.sent[sid] = bytearray()
                case "append":
                    data = chunk(sid, index, size)
                    acked.sent.setdefault(sid, bytearray()).extend(data)
                    await manager.append(sid, data)
                    acked.durable[sid] = manager.stat(sid).durable_offset
                case "flush":
                    acked.durable[sid] = (await manager.flush(sid)).durable_offset
                case "finalize":
                    info = await manager.finalize(sid)
                    assert info.sha256 is not None
                    acked.ready[sid] = info.sha256
                case "delete":
                    acked.delete_tried.add(sid)
                    await manager.delete(sid)
                    acked.deleted.add(sid)
        except MmstreamError:
            ok = False
            if op == "append":  # like a client resuming: what it sent past the size is unsent
                with contextlib.suppress(MmstreamError):
                    del acked.sent[sid][manager.stat(sid).size :]
        if on_result is not None:
            on_result(op, sid, ok)


async def check_recovered(manager: StreamManager, acked: Acked) -> list[str]:
    """What must hold after a crash; returns the violations (empty: all good)."""
    problems: list[str] = []
    found = {info.stream_id: info for info in manager.list()}
    for sid, info in found.items():
        if info.status is StreamStatus.ERROR:
            problems.append(f"{sid}: in ERROR after recovery ({info.error})")
            continue
        data = await manager.read(sid, 0, info.size)
        sent = bytes(acked.sent.get(sid, b""))
        if data != sent[: len(data)] or len(data) > len(sent):
            problems.append(f"{sid}: {len(data)} bytes recovered are not a prefix of those sent")
    for sid, digest in acked.ready.items():
        if sid in acked.delete_tried and sid not in found:
            continue
        info = found.get(sid)
        if info is None or info.status is not StreamStatus.READY or info.sha256 != digest:
            problems.append(f"{sid}: acknowledged READY, recovered as {info}")
    for sid in acked.deleted:
        if sid in found:
            problems.append(f"{sid}: acknowledged deleted, but it came back")
    for sid, durable in acked.durable.items():
        if sid in acked.delete_tried or sid in acked.ready:
            continue
        info = found.get(sid)
        if info is None or info.size < durable:
            size = None if info is None else info.size
            problems.append(f"{sid}: durable offset {durable} acknowledged, recovered {size}")
    for sid in acked.created - acked.delete_tried:
        if sid not in found:
            problems.append(f"{sid}: acknowledged created, missing after recovery")
    return problems
