"""``no-space`` end to end: a server whose cache lives on a 4 MiB tmpfs (in a private mount
namespace, so no root privileges or cleanup are needed) refuses an upload that does not fit
with a clear error, and keeps serving."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from mmstream.client import connect
from mmstream.errors import NoSpaceError

MiB = 1 << 20


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {where}"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


async def test_a_full_disk_is_a_no_space_error(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if not _can_mount_tmpfs(mount):
        pytest.skip("no unprivileged mount namespaces here (unshare -rm)")
    config = tmp_path / "mmstream.toml"
    config.write_text(
        f'[cache]\ndirectory = "{mount}/cache"\nbackend = "mmap"\ninitial_size = "1 MiB"\n'
        '[server]\nport = 0\n[logging]\nlevel = "INFO"\n'
    )
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {mount} && "
        f"exec {sys.executable} -m mmstream serve --config {config}"
    )
    process = await trio.lowlevel.open_process(
        ["unshare", "-rm", "sh", "-c", script], stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        log = b""
        with trio.fail_after(20):
            while not (found := re.search(rb"listening on (ws://\S+)", log)):
                chunk = await process.stderr.receive_some()
                assert chunk, log.decode()
                log += chunk
        url = found.group(1).decode()
        async with connect(url) as client:
            await client.create("fits")
            await client.append("fits", b"x" * 1000)
            await client.create("too-big")
            with pytest.raises(NoSpaceError) as info:
                await client.append("too-big", b"y" * (8 * MiB))
            assert info.value.code == "no-space"
            assert str(mount) not in info.value.message  # the server's paths stay its own
            # The other stream is untouched and the server still answers.
            await client.finalize("fits", size=1000)
            assert await client.read("fits") == b"x" * 1000
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
