"""Hypothesis-generated frame sequences (valid, mutated and garbage) against a live server:
every text frame gets a reply, none is ``internal``, the connection survives, and a normal
client is served afterwards. (Issue 4, item 8; the codec alone is fuzzed in
tests/test_protocol_fuzz.py.)"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threaded_server import server_in_a_thread
from websockets.trio.client import connect as ws_connect

from mmstream.client import connect
from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer

SCALE = int(os.environ.get("MMSTREAM_FUZZ_SCALE", "1"))

streams = st.sampled_from(["f1", "f2", "missing", "../x", "", "a" * 200])
numbers = st.one_of(
    st.integers(0, 3000),
    st.sampled_from([-1, 2**63 - 1, 2**63, 2**64, -(2**63), 1.5, True, None, "7"]),
)
valid_ops = st.one_of(
    st.fixed_dictionaries({"op": st.just("create"), "stream": streams}),
    st.fixed_dictionaries({"op": st.just("append"), "stream": streams},
                          optional={"offset": numbers}),
    st.fixed_dictionaries({"op": st.sampled_from(["sync", "stat", "delete"]), "stream": streams}),
    st.fixed_dictionaries({"op": st.just("finalize"), "stream": streams},
                          optional={"size": numbers, "sha256": st.sampled_from(["0" * 64, "x"])}),
    st.fixed_dictionaries({"op": st.just("read"), "stream": streams},
                          optional={"offset": numbers, "length": numbers}),
    st.fixed_dictionaries({"op": st.just("list")}),
    st.fixed_dictionaries({"op": st.just("hello")}, optional={"token": st.text(max_size=8)}),
)  # fmt: skip
mutated = st.tuples(valid_ops, st.text(max_size=6), st.one_of(numbers, st.text(max_size=4))).map(
    lambda t: {**t[0], t[1]: t[2]}
)
frames = st.one_of(
    valid_ops.map(json.dumps),
    mutated.map(json.dumps),
    st.text(max_size=40),
    st.binary(min_size=1, max_size=3000),
)


def _reply_codes(message: Any) -> str | None:
    if isinstance(message, dict) and message.get("ok") is False:
        return str(message["error"]["code"])
    return None


@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server in its own thread and Trio run, so each hypothesis example can run its
    own synchronous ``trio.run`` against it (hypothesis cannot drive async tests here)."""
    config = Config(
        cache=CacheConfig(directory=tmp_path_factory.mktemp("fuzz") / "cache",
                          initial_size=ByteSize(1 << 20)),
        server=ServerConfig(port=0),
    )  # fmt: skip
    with server_in_a_thread(config) as server:
        yield server


async def _exchange(url: str, batch: list[str | bytes]) -> None:
    async with ws_connect(url, compression=None) as ws:
        for frame in batch:
            await ws.send(frame)
        await ws.send('{"op":"list","id":"probe"}')
        replies = 0
        with trio.fail_after(10):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    continue
                decoded = json.loads(message)
                assert _reply_codes(decoded) != "internal", (batch, decoded)
                replies += "re" in decoded
                if decoded.get("re") == "probe":
                    assert decoded["ok"] is True
                    break
        # Exactly one reply per text frame, in order: the probe's reply came last.
        assert replies == sum(isinstance(frame, str) for frame in batch) + 1, batch


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(frames, min_size=1, max_size=12))
def test_fuzzed_sequences_get_replies(
    threaded_server: RunningServer, batch: list[str | bytes]
) -> None:
    trio.run(_exchange, threaded_server.url + "/v1", batch)


def test_a_normal_client_is_served_after_the_fuzzing(threaded_server: RunningServer) -> None:
    async def normal() -> None:
        async with connect(threaded_server.url) as client:
            await client.create("after-fuzz")
            await client.append("after-fuzz", b"still fine")
            assert await client.read("after-fuzz") == b"still fine"

    trio.run(normal)
