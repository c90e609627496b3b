"""More real radio programs: Debian's ices2 (libshout) pushes a playlist of Ogg Vorbis files,
and VLC listens to a live stream and shows its in-band title."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio
from icecast_helpers import (
    FFMPEG,
    admin_metadata,
    has_size,
    needs,
    needs_ffmpeg,
    running_server,
    wait_until,
)
from radio_programs import ICES_TITLES, needs_ices2, run_ices2

from mmstream.streams import StreamStatus

CVLC = shutil.which("cvlc")


async def _seconds_of(body: bytes) -> float:
    """What ffmpeg decodes of ``body``, in seconds (8 kHz mono)."""
    done = await trio.run_process(
        [FFMPEG or "ffmpeg", "-v", "error", "-i", "-", "-f", "s16le", "-ac", "1", "-ar", "8000",
         "-"],
        stdin=body, capture_stdout=True, capture_stderr=True,
    )  # fmt: skip
    assert not done.stderr, done.stderr
    return len(done.stdout) / 2 / 8000


@needs_ices2
@needs_ffmpeg
async def test_ices2_streams_its_ogg_vorbis_playlist(tmp_path: Path) -> None:
    """ices2 (libshout) sends each file of its playlist as a chained Ogg stream, titles in
    each file's comment header."""
    async with running_server(tmp_path) as server:
        with trio.fail_after(60):
            log = await run_ices2(tmp_path, server.port)
        assert "Connected to server" in log, log
        info = server.manager.stat("ices")
        assert info.status is StreamStatus.READY, log  # the source ended: finalized
        assert info.metadata["ice-name"] == "Ices Radio"
        assert info.content_type == "application/ogg"
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"{server.http_url}/streams/ices")).content
    assert len(body) == info.size
    assert b"title=First Song" in body and b"title=Second Song" in body
    assert abs(await _seconds_of(body) - 3.0) < 0.2  # both files, whole
    # The titles in the files' comment headers are the stream's (ARTIST - TITLE, as Icecast
    # forms them), as if set through /admin/metadata, and no chain was added for them.
    assert [t.title for t in info.titles] == ICES_TITLES
    assert body.count(b"title=") == 2


@pytest.fixture
def vlc_home() -> Iterator[tuple[Path, dict[str, int]]]:
    """A home VLC may write, and, as root, whom to run it as: VLC refuses to run as root
    (CI runs the tests as root)."""
    with tempfile.TemporaryDirectory(prefix="mmstream-vlc-") as home:
        os.chmod(home, 0o777)
        as_user = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
        yield Path(home), as_user


@needs(CVLC, "cvlc", "vlc-bin vlc-plugin-base")
@needs_ffmpeg
async def test_vlc_plays_a_live_stream_and_shows_its_title(
    tmp_path: Path, vlc_home: tuple[Path, dict[str, int]]
) -> None:
    home, as_user = vlc_home
    async with running_server(tmp_path) as server, trio.open_nursery() as nursery:
        url = f"icecast://source:hackme@127.0.0.1:{server.port}/streams/live"
        push = [FFMPEG or "ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "sine=d=30",
                "-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "-content_type", "audio/mpeg",
                url]  # fmt: skip
        nursery.start_soon(partial(trio.run_process, push, capture_stderr=True, check=False))
        await wait_until(has_size(server, "live", 4096))
        query = "mount=/streams/live&mode=updinfo&song=" + quote("VLC Hears - This")
        assert (await admin_metadata(server, query))[0] == 200
        # ``icyx://`` is VLC's own name for an Icecast stream: its HTTP access then asks for
        # in-band titles (``Icy-MetaData: 1``); with ``http://`` VLC 3 does not.
        with trio.fail_after(60):
            done = await trio.run_process(
                [CVLC or "cvlc", "-vv", "-I", "dummy", "--aout=dummy", "--no-video",
                 "--run-time=2", "--play-and-exit", f"icyx://127.0.0.1:{server.port}/streams/live"],
                capture_stdout=True, capture_stderr=True, check=False,
                env={**os.environ, "HOME": str(home)}, **as_user,
            )  # fmt: skip
        log = done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace")
        assert "New Icy-Title=VLC Hears - This" in log, log[-3000:]
        assert "using audio decoder module" in log, log[-3000:]  # it decoded, not only read
        nursery.cancel_scope.cancel()
