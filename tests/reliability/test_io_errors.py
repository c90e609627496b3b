"""Test 3, I/O errors: the Nth posix_fallocate/fsync/fdatasync/ftruncate fails with ENOSPC or
EIO, for every N the workload reaches. 0 crashes (only mmstream errors reach the caller),
0 success replies after a failed sync, and what was acknowledged is intact after a restart.

(On Linux the mmap backend syncs with fdatasync, not msync; msync is the fallback elsewhere.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from faulty import SYNCS, FailingOs, load_backend, one_backend
from workload import Acked, check_recovered, run_script, workload_config

from mmstream.streams import open_stream_manager


async def fail_once(
    directory: Path, backend: str, fail_at: int | None, fail_errno: int
) -> tuple[FailingOs, list[str]]:
    """Run the workload with call ``fail_at`` failing; return the violations."""
    config = workload_config(directory, backend)
    os.mkdir(directory, 0o700)  # the start-up's own checks are not what is tested here
    registry = one_backend(load_backend(backend))
    failing = FailingOs(fail_at=fail_at, fail_errno=fail_errno)
    acked = Acked()
    problems: list[str] = []
    #: Streams on which a sync failed: nothing may succeed on them afterwards.
    poisoned: set[str] = set()

    def on_result(op: str, sid: str, ok: bool) -> None:
        if failing.failed and failing.failed[-1] != seen[-1]:
            seen.append(failing.failed[-1])
            _, function, target = failing.failed[-1]
            if function in SYNCS:
                if ok:
                    problems.append(f"{op} {sid} replied success after its sync failed")
                # A failed sync of the data may have dropped pages: the stream is done for.
                # A sidecar's temporary file that could not be synced for want of space
                # is thrown away, not retried; a later, successful record is true.
                if target.endswith(".data") or fail_errno != errno.ENOSPC:
                    poisoned.add(sid)
                return
        if ok and sid in poisoned and op in ("append", "flush", "finalize"):
            problems.append(f"{op} {sid} succeeded after an earlier sync of it failed")

    seen: list[tuple[int, str, str] | None] = [None]
    with failing.installed():
        async with open_stream_manager(config, registry=registry) as manager:
            await run_script(manager, acked, on_result=on_result)
    # A restart with working I/O: what was acknowledged is there (no power was lost).
    async with open_stream_manager(config, registry=registry) as manager:
        problems += [p for p in await check_recovered(manager, acked) if "in ERROR" not in p]
    return failing, problems


@pytest.mark.parametrize("fail_errno", [errno.EIO, errno.ENOSPC], ids=errno.errorcode.get)
async def test_every_failing_call(
    ram_path: Path, backend: str, fail_errno: int, figure: Callable[[str, str, str], None]
) -> None:
    clean, problems = await fail_once(ram_path / "clean", backend, None, fail_errno)
    assert problems == []
    total = len(clean.calls)
    assert total > 30
    for fail_at in range(1, total + 1):
        failing, found = await fail_once(ram_path / f"f{fail_at}", backend, fail_at, fail_errno)
        assert failing.failed, f"call {fail_at} was not reached"
        problems += [f"{clean.calls[fail_at - 1]} #{fail_at} failing: {p}" for p in found]
    assert problems == []
    kinds = ", ".join(f"{clean.calls.count(k)} {k}" for k in sorted(set(clean.calls)))
    figure(
        "3. I/O errors",
        f"{backend} backend: each of the {total} calls ({kinds}) of the script failed with "
        f"{errno.errorcode[fail_errno]}, one run per call",
        "0 crashes, 0 success replies after a failed sync, acknowledged data intact after restart",
    )
