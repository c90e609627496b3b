"""Test 8, protocol fuzzing against a live server, with its logs captured: hypothesis-made
message sequences (valid requests, mutated ones, garbage text and binary frames), several
connections at a time. 0 crashes, 0 ``internal`` replies, 0 tracebacks or errors in the
server's log, and a normal client is served afterwards. (Lighter variants with other
checks: tests/client/test_live_fuzz.py; the codec alone: tests/test_protocol_fuzz.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from soak import rounds
from threaded_server import Captured, logged_server_in_a_thread
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect as ws_connect

from mmstream.client import connect
from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer

#: Sequences per hypothesis example (sent on as many connections at once).
PER_EXAMPLE = 8
EXAMPLES = rounds(125, 1250)

ids = st.sampled_from(["z1", "z2", "z3", "missing", "../x", "", "a" * 129, "a/b", "\x00"])
numbers = st.one_of(
    st.integers(-5, 5000),
    st.sampled_from([-1, -(2**63), 2**63 - 1, 2**63, 2**64, 10**400, 1.5, -0.0, True, None]),
    st.text(max_size=5),
)
request_ids = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.lists(st.integers()))
ops = st.sampled_from(
    ["hello", "create", "append", "sync", "finalize", "read", "tail", "stat", "list", "delete"]
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request of any operation, with plausible or hostile values."""
    request: dict[str, Any] = {"op": draw(ops), "id": draw(request_ids)}
    for field, values in (
        ("stream", ids),
        ("offset", numbers),
        ("length", numbers),
        ("size", numbers),
        ("sha256", st.sampled_from(["0" * 64, "F" * 64, "x", ""])),
        ("content_type", st.sampled_from(["audio/mpeg", "", "a\nb", "x" * 300])),
        ("metadata", st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)),
        ("token", st.text(max_size=6)),
    ):
        if draw(st.booleans()):
            request[field] = draw(values)
    return request


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4),
                                                                     children, max_size=3),
    max_leaves=8,
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> str:
    request = draw(requests())
    match draw(st.integers(0, 3)):
        case 0:  # an extra or replaced field of any JSON type
            request[draw(st.text(max_size=6))] = draw(json_values)
        case 1 if len(request) > 1:  # a field dropped
            request.pop(draw(st.sampled_from(sorted(request))))
        case 2:
            request["op"] = draw(json_values)
        case _:
            return json.dumps(request)[: draw(st.integers(0, 40))]  # cut short
    return json.dumps(request)


frames = st.one_of(
    requests().map(json.dumps),
    mutated(),
    json_values.map(json.dumps),
    st.text(max_size=60),
    st.just("[" * 5000 + "]" * 5000),  # deep nesting
    st.binary(min_size=1, max_size=2000),
)
sequences = st.lists(frames, min_size=1, max_size=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Captured]]:
    """A server in its own thread and Trio run: each example runs its own ``trio.run``."""
    config = Config(
        cache=CacheConfig(directory=tmp_path_factory.mktemp("wirefuzz") / "cache",
                          initial_size=ByteSize(64 * 1024)),
        server=ServerConfig(port=0, max_message_size=ByteSize(1 << 20)),
    )  # fmt: skip
    with logged_server_in_a_thread(config) as live:
        yield live


SENT = {"sequences": 0, "frames": 0, "replies": 0}


async def exchange(url: str, batch: list[str | bytes]) -> None:
    async with ws_connect(url, compression=None, max_size=None) as ws:
        try:
            for frame in batch:
                await ws.send(frame)
            await ws.send('{"op":"list","id":"probe"}')
            with trio.fail_after(10):
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes):
                        continue
                    decoded = json.loads(message)
                    if isinstance(decoded, dict) and decoded.get("ok") is False:
                        assert decoded["error"]["code"] != "internal", (batch, decoded)
                    SENT["replies"] += 1
                    if isinstance(decoded, dict) and decoded.get("re") == "probe":
                        break
        except ConnectionClosed as exc:
            # Only a frame the protocol forbids may close a session, with its code.
            assert exc.rcvd is not None and exc.rcvd.code in (1002, 1007, 1009), (batch, exc)
    SENT["sequences"] += 1
    SENT["frames"] += len(batch)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(batches=st.lists(sequences, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_fuzzed_sequences(
    live: tuple[RunningServer, Captured], batches: list[list[str | bytes]]
) -> None:
    server, _ = live

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            for batch in batches:
                nursery.start_soon(exchange, server.url + "/v1", batch)

    trio.run(run)


def test_after_the_fuzzing(
    live: tuple[RunningServer, Captured], figure: Callable[[str, str, str], None]
) -> None:
    server, captured = live

    async def normal() -> None:
        async with connect(server.url) as client:
            await client.upload("after-wire-fuzz", b"still fine")
            assert await client.read("after-wire-fuzz") == b"still fine"

    trio.run(normal)
    assert captured.problems() == []
    assert SENT["sequences"] >= EXAMPLES * PER_EXAMPLE
    figure(
        "8. Protocol fuzzing",
        f"{SENT['sequences']} hypothesis-made sequences ({SENT['frames']} frames: valid, "
        "mutated, cut-short and garbage JSON, deep nesting, random text and binary), "
        f"{PER_EXAMPLE} connections at a time, against a live server",
        f"0 crashes, 0 internal replies ({SENT['replies']} replies), 0 tracebacks or errors "
        f"in {len(captured.records)} server log records; a normal client served afterwards",
    )
