"""Test 2, power loss: the power goes at every I/O step of create/append/flush/finalize/delete;
the disk forgets every write not followed by a sync. 0 READY streams lost, no durable
offset goes backwards, and taking out one directory sync makes the check fail."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from faulty import PowerModel, load_backend, one_backend
from workload import Acked, check_recovered, run_script, workload_config

from mmstream.streams import open_stream_manager


async def crash_once(
    directory: Path, backend: str, crash_at: int | None, *, drop_sync: bool = False
) -> tuple[PowerModel, list[str]]:
    """Run the workload with the power going at step ``crash_at`` (``None``: after a clean
    shutdown), cut the power, recover with the plain backend; return the violations."""
    config = workload_config(directory, backend)
    os.mkdir(directory, 0o700)
    model = PowerModel(directory, crash_at=crash_at)
    model.skip_sidecar_directory_sync = drop_sync
    registry = one_backend(model.factory(load_backend(backend)))
    acked = Acked()
    with model.installed():
        async with open_stream_manager(config, registry=registry) as manager:
            await run_script(manager, acked)
    model.cut()
    async with open_stream_manager(config, registry=one_backend(load_backend(backend))) as manager:
        return model, await check_recovered(manager, acked)


async def sweep(
    ram_path: Path, backend: str, *, drop_sync: bool = False, every: int = 1
) -> tuple[int, list[str]]:
    """Crash at every ``every``-th step (and after the end); return the number of crash
    points and every violation."""
    model, problems = await crash_once(ram_path / "clean", backend, None, drop_sync=drop_sync)
    assert len(model.steps) > 60  # the script ran through: every operation is I/O
    total = len(model.steps)
    points = range(1, total + 1, every)
    for crash_at in points:
        _, found = await crash_once(
            ram_path / f"crash{crash_at}", backend, crash_at, drop_sync=drop_sync
        )
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
