"""The browser client printed in docs/protocol.md works: run it with Node's WebSocket (the
same API as browsers) against a real server. Skipped where no such Node is installed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from mmstream.server import RunningServer

DOC = Path(__file__).parents[2] / "docs" / "protocol.md"
DRIVER = """
const bytes = new Uint8Array(3 * 1048576 + 5);
for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919) % 251;
const file = new File([bytes], "take.wav", { type: "audio/wav" });
console.log(JSON.stringify(await upload(process.argv[2], "from-js", file)));
"""


def _node_with_websocket() -> list[str] | None:
    node = shutil.which("node")
    if node is None:
        return None
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run(
            [node, *flags, "-e", "if (typeof WebSocket !== 'function') process.exit(1)"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return [node, *flags]
    return None


async def test_the_documented_browser_client_uploads(
    one_server: RunningServer, tmp_path: Path
) -> None:
    node = await trio.to_thread.run_sync(_node_with_websocket)
    if node is None:
        pytest.skip("needs Node with a WebSocket global (>= 21, or 20 with a flag)")
    code = DOC.read_text().split("```js\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "upload.mjs"
    script.write_text(code + DRIVER)
    with trio.fail_after(60):
        result = await trio.run_process(
            [*node, str(script), one_server.url], capture_stdout=True, capture_stderr=True
        )
    stat = json.loads(result.stdout.decode().strip().splitlines()[-1])
    expected = bytes((i * 7919) % 251 for i in range(3 * 1048576 + 5))
    assert (stat["status"], stat["size"], stat["content_type"]) == (
        "ready",
        len(expected),
        "audio/wav",
    )
    assert stat["sha256"] == hashlib.sha256(expected).hexdigest()
    assert one_server.manager.stat("from-js").sha256 == stat["sha256"]
