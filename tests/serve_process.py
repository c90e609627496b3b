"""``mmstream serve`` as a real subprocess for the tests that need one (browsers, HLS players)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serve_process(root: Path, config: Path | None = None) -> Iterator[str]:
    """Serve ``root/cache`` on a free port until the block ends, with ``config`` (a TOML
    file) if given; yields the http:// base URL. The server's output goes to
    ``root/server.log``, shown if it does not start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (root / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mmstream", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--cache-dir", str(root / "cache"),
             *(["--config", str(config)] if config is not None else [])],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"server did not start:\n{(root / 'server.log').read_text()}")
                time.sleep(0.1)
            yield base
        finally:
            stop_process(process)


def modules_after_start(cache_dir: Path, imports: str = "mmstream.cli") -> set[str]:
    """The modules a fresh interpreter holds after importing ``imports`` (a comma-separated
    list), building ``mmstream serve``'s command line as the command does, and starting a
    server on the default config with ``cache_dir``, then shutting it down: for tests that an
    optional part loads only when configured."""
    code = (
        f"import sys, trio, {imports}\n"
        "from mmstream.cli import build_parser\n"
        "build_parser('serve').parse_args(['serve'])\n"
        "from mmstream.config import load_config\n"
        "from mmstream.server import serve\n"
        f"config = load_config(None, **{{'cache.directory': {str(cache_dir)!r}, "
        "'server.port': 0, 'server.host': '127.0.0.1'})\n"
        "async def main():\n"
        "    async with trio.open_nursery() as n:\n"
        "        server = await n.start(serve, config)\n"
        "        server.shutdown()\n"
        "trio.run(main)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "mmstream.server._app" in loaded  # the server did run
    return loaded
