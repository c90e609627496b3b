"""Tests 6 and 7 over the wire: hostile ids in every request's ``stream`` field, in the
bound-endpoint URL and in the HTTP playback path; hostile numbers in every offset, length
and size field. Only defined error codes come back, no file outside the cache directory
changes, and no byte past the written end is ever sent."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from wire import http_status

from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer, serve

END = 1000
DATA = (hashlib.sha256(b"wire").digest() * 40)[:END]
NUMBERS: list[Any] = [-1, -(2**63), 2**63 - 1, 2**64, END, END + 1, 0, 1, END - 1,
                      None, True, 1.5, "10", [1], 10**30]  # fmt: skip
DEFINED = {"bad-request", "out-of-range", "offset-conflict", "checksum-mismatch",
           "not-uploading", "invalid-id", "not-found", "too-large"}  # fmt: skip
IDS = ["..", "../x", "/etc/passwd", "a/b", "..\\", "%2e%2e%2f", "a\x00b", "\uff0e\uff0e",
       "\uff0f", "x" * 4096, "", "x.json", "x.data", "x.json.tmp", ".hidden", "a b",
       "caf\u00e9", "\u2215", "*", "~"]  # fmt: skip
OPS = ["create", "append", "sync", "finalize", "read", "tail", "stat", "delete"]


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(
        cache=CacheConfig(directory=tmp_path / "cache", initial_size=ByteSize(1 << 20),
                          sync_policy="finalize"),
        server=ServerConfig(port=0, max_message_size=ByteSize(64 * 1024)),
    )  # fmt: skip
    running: RunningServer = await nursery.start(serve, config)
    return running


async def call(ws: ClientConnection, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Send one request; its reply, and the binary frames a read reply announces."""
    await ws.send(json.dumps(request))
    with trio.fail_after(5):
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("re") == request["id"]:
                break
        data = b""
        if reply.get("ok") and request["op"] == "read":
            while len(data) < reply["length"]:
                data += await ws.recv()
    return reply, data


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "cache" not in p.parts}  # fmt: skip


async def test_hostile_numbers_over_the_wire(
    server: RunningServer, figure: Callable[[str, str, str], None]
) -> None:
    counts: dict[str, int] = {}
    async with ws_connect(server.url + "/v1", compression=None, max_size=None) as ws:
        for op in ("create", "append"):
            await call(ws, {"op": op, "id": op, "stream": "s"})
        await ws.send(DATA)
        assert (await call(ws, {"op": "sync", "id": "sync", "stream": "s"}))[0]["ok"]
        n = 0
        for status in ("uploading", "ready"):
            requests: list[dict[str, Any]] = []
            for offset in NUMBERS:
                for length in NUMBERS:
                    requests.append({"op": "read", "stream": "s", "offset": offset,
                                     "length": length})  # fmt: skip
            for value in NUMBERS:
                requests.append({"op": "append", "stream": "s", "offset": value})
                requests.append(
                    {"op": "finalize", "stream": "s", "size": value, "sha256": "0" * 64}
                )
            for request in requests:
                n += 1
                reply, data = await call(ws, {**request, "id": n})
                if reply["ok"]:
                    code = "ok"
                    if request["op"] == "read":
                        offset = request["offset"]
                        assert data == DATA[offset : offset + len(data)] and len(data) <= END
                else:
                    code = reply["error"]["code"]
                    assert code in DEFINED, (request, reply)
                counts[code] = counts.get(code, 0) + 1
            if status == "uploading":
                reply, _ = await call(ws, {"op": "finalize", "id": "fin", "stream": "s"})
                assert reply["ok"] and reply["stat"]["size"] == END
        # A tail past the end is refused; at the end it ends at once on a READY stream.
        for offset in NUMBERS:
            n += 1
            reply, _ = await call(ws, {"op": "tail", "id": n, "stream": "s", "offset": offset})
            code = "ok" if reply["ok"] else reply["error"]["code"]
            assert code in DEFINED | {"ok"}
            counts[code] = counts.get(code, 0) + 1
            if reply["ok"]:
                break  # one tail per connection
    total = sum(counts.values())
    shown = ", ".join(f"{c} {code}" for code, c in sorted(counts.items()))
    figure(
        "7. Hostile numbers",
        f"over the wire: {len(NUMBERS)} values (the set, 2**64, 10**30, null, true, 1.5, "
        f'"10", [1]) in every read offset/length, append offset, finalize size and tail '
        "offset, on an uploading and a READY stream",
        f"{total} requests: {shown}; every read's bytes exactly the stored ones, 0 past the "
        "written end",
    )


async def test_hostile_ids_over_the_wire(
    server: RunningServer, tmp_path: Path, figure: Callable[[str, str, str], None]
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0\n")
    (tmp_path / "x.data").write_text("a canary next to the cache\n")
    before = tree(tmp_path)
    refused = 0
    async with ws_connect(server.url + "/v1", compression=None, max_size=None) as ws:
        n = 0
        for sid in IDS:
            for op in OPS:
                n += 1
                reply, _ = await call(ws, {"op": op, "id": n, "stream": sid})
                assert not reply["ok"]
                assert reply["error"]["code"] in ("invalid-id", "bad-request"), (sid, reply)
                refused += 1
    for sid in IDS:  # bound endpoints and playback paths
        quoted = urllib.parse.quote(sid, safe="")
        try:
            url = f"{server.url}/v1/streams/{quoted}"
            async with ws_connect(url, compression=None) as ws:
                reply, _ = await call(ws, {"op": "create", "id": 1})
                assert reply["error"]["code"] in ("invalid-id", "bad-request")
        except InvalidStatus as exc:
            assert exc.response.status_code in (400, 404)
        except ConnectionClosed:
            pass
        refused += 1
        status = await http_status(server.port, f"/streams/{quoted}")
        assert status in (400, 404), (sid, status)
        refused += 1
    assert tree(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []
    figure(
        "6. Hostile ids",
        f"over the wire: {len(IDS)} hostile ids in the stream field of each of {len(OPS)} "
        "operations, percent-encoded in /v1/streams/{id} and in GET /streams/{id}",
        f"{refused}/{refused} refused (invalid-id, bad-request, 400 or 404); 0 files created; "
        "the canary tree unchanged",
    )
