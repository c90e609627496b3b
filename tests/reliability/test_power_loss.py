"""Test 2, power loss: the power goes at every I/O step of create/append/flush/finalize/delete;
the disk forgets every write not followed by a sync. 0 READY streams lost, no durable
offset goes backwards, and taking out one directory sync makes the check fail.

With ``sync_policy = "finalize"`` the uploads hold bytes past their durable offset, which a
restart keeps only if their checksum record proves them intact: the sweep runs again with
the disk keeping the unsynced checksum records (but not the data), keeping them torn, and
keeping the unsynced data (but not the records); never a byte the client did not send."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from faulty import PowerModel, load_backend, one_backend
from workload import Acked, check_recovered, run_script, workload_config

from mmstream.config import SyncPolicy
from mmstream.streams import open_stream_manager

#: What the disk keeps of unsynced writes, beyond the default of nothing:
#: (suffixes kept, (suffix, unsynced byte) torn or None).
KEEPS: dict[str, tuple[tuple[str, ...], tuple[str, int] | None]] = {
    "checksums kept": ((".sum",), None),
    "checksums torn": ((".sum",), (".sum", 9)),
    "data kept": ((".data",), None),
    "checksums and data kept, data torn": ((".sum", ".data"), (".data", 100)),
}


async def crash_once(
    directory: Path,
    backend: str,
    crash_at: int | None,
    *,
    drop_sync: bool = False,
    policy: SyncPolicy = "always",
    keep: str | None = None,
) -> tuple[PowerModel, list[str]]:
    """Run the workload with the power going at step ``crash_at`` (``None``: after a clean
    shutdown), cut the power, recover with the plain backend; return the violations."""
    config = workload_config(directory, backend, policy)
    os.mkdir(directory, 0o700)
    model = PowerModel(directory, crash_at=crash_at)
    model.skip_sidecar_directory_sync = drop_sync
    if keep is not None:
        model.keep_unsynced, model.tear = KEEPS[keep]
    registry = one_backend(model.factory(load_backend(backend)))
    acked = Acked()
    with model.installed():
        async with open_stream_manager(config, registry=registry) as manager:
            await run_script(manager, acked)
    model.cut()
    async with open_stream_manager(config, registry=one_backend(load_backend(backend))) as manager:
        return model, await check_recovered(manager, acked)


async def sweep(
    ram_path: Path,
    backend: str,
    *,
    drop_sync: bool = False,
    every: int = 1,
    policy: SyncPolicy = "always",
    keep: str | None = None,
) -> tuple[int, list[str]]:
    """Crash at every ``every``-th step (and after the end); return the number of crash
    points and every violation."""
    options = {"drop_sync": drop_sync, "policy": policy, "keep": keep}
    model, problems = await crash_once(ram_path / "clean", backend, None, **options)
    assert len(model.steps) > 40  # the script ran through: every operation is I/O
    total = len(model.steps)
    points = range(1, total + 1, every)
    for crash_at in points:
        _, found = await crash_once(ram_path / f"crash{crash_at}", backend, crash_at, **options)
        problems += [f"power cut at step {crash_at} ({model.steps[crash_at - 1]}): {p}"
                     for p in found]  # fmt: skip
    return len(points) + 1, problems


async def test_power_cut_at_every_step(
    ram_path: Path, backend: str, figure: Callable[[str, str, str], None]
) -> None:
    points, problems = await sweep(ram_path, backend)
    assert problems == []
    figure(
        "2. Power loss",
        f"{backend} backend: power cut at each of the {points - 1} I/O steps of a 16-operation "
        "create/append/flush/finalize/delete script, and after it; unsynced writes forgotten",
        "0 READY streams lost, 0 durable offsets gone backwards, 0 acknowledged deletes undone",
    )


async def test_dropping_the_sidecar_directory_sync_loses_streams(
    ram_path: Path, backend: str, figure: Callable[[str, str, str], None]
) -> None:
    """The model is sharp enough to notice a missing directory fsync."""
    points, problems = await sweep(ram_path, backend, drop_sync=True, every=7)
    assert problems, "without the directory sync some acknowledged state must be lost"
    assert any("acknowledged READY" in p or "acknowledged created" in p for p in problems)
    figure(
        "2. Power loss",
        f"{backend} backend: the same sweep with the directory fsync after each sidecar rename "
        "taken out",
        f"fails as it must: {len(problems)} violations at {points} crash points",
    )


@pytest.mark.parametrize("keep", [None, *KEEPS])
async def test_power_cut_with_bytes_past_the_durable_offset(
    ram_path: Path, backend: str, keep: str | None, figure: Callable[[str, str, str], None]
) -> None:
    points, problems = await sweep(ram_path, backend, policy="finalize", keep=keep)
    assert problems == []
    figure(
        "2. Power loss",
        f"{backend} backend, sync_policy finalize (uploads hold unsynced bytes): power cut "
        f"at each of the {points - 1} I/O steps, unsynced writes forgotten"
        + (f" except the {keep.replace('kept', 'kept by the disk')}" if keep else ""),
        "0 READY streams lost, 0 durable offsets gone backwards, 0 bytes the client did not send",
    )
