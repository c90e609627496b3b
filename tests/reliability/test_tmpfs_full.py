"""Test 4, full disk: uploads fill a 64 MiB tmpfs. 0 SIGBUS (the writer is a subprocess, so
a SIGBUS would be its exit signal), every writer gets ``no-space``, the READY streams keep
their sha256, and deleting a stream frees space for the others."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

WRITER = Path(__file__).with_name("fill_disk.py")
SIZE = "64m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A 64 MiB tmpfs, and the command prefix that sees it: mounted here as root, or inside
    a user+mount namespace (``unshare -rm``) otherwise."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() == 0:
        command = ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "mmstream-test",
                   str(mount_point)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            try:
                yield mount_point, []
            finally:
                subprocess.run(["umount", "-l", str(mount_point)], check=False)
            return
        reason = f"mount failed: {done.stderr.strip()}"
    else:
        reason = "not root"
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip(f"no small tmpfs: {reason}, and no unshare(1) for a user namespace")
    probe = subprocess.run(
        [unshare, "-rm", "mount", "-t", "tmpfs", "-o", f"size={SIZE}", "t", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"no small tmpfs: {reason}; unshare -rm: {probe.stderr.strip()}")
    script = f'mount -t tmpfs -o size={SIZE},mode=0700 t "$1" && shift && exec "$@"'
    yield mount_point, [unshare, "-rm", "sh", "-c", script, "sh", str(mount_point)]


def test_full_disk_is_an_error_reply_not_a_crash(
    small_disk: tuple[Path, list[str]], backend: str, figure: Callable[[str, str, str], None]
) -> None:
    mount_point, prefix = small_disk
    done = subprocess.run(
        [*prefix, sys.executable, str(WRITER), str(mount_point), backend],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != -signal.SIGBUS, "the writer died of SIGBUS"
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    errors = result["errors"]
    assert sorted(errors) == [f"writer{n}" for n in range(4)]
    assert set(errors.values()) == {"no-space"}, errors
    assert result["after"] == result["before"]
    assert result["resumed_after_delete"] is True
    written = sum(result["written"].values())
    figure(
        "4. Full disk",
        f"{backend} backend: 3 READY streams of 4 MiB, then 4 concurrent uploads appending "
        "1 MiB at a time into a 64 MiB tmpfs until it is full (writer in a subprocess)",
        f"0 SIGBUS; 4/4 writers got no-space after {written / 2**20:.0f} MiB in all; the 3 "
        "READY sha256 unchanged; after deleting one upload another appends again",
    )
