"""docs/protocol.md and the server agree: every complete example frame in the document
decodes, each example reply decodes as the reply to the request it answers and is exactly
what the codec would encode, and every example exchange replayed against a real server gets
the replies the doc shows."""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import trio
from websockets.trio.client import connect as ws_connect

from mmstream.client import connect
from mmstream.config import CacheConfig, Config, ServerConfig
from mmstream.protocol import (
    REPLY_TYPES,
    SUBPROTOCOL,
    Ack,
    End,
    ErrorEvent,
    ErrorReply,
    Reply,
    Request,
    decode_request,
    decode_server_message,
    encode_event,
    encode_reply,
    encode_request,
)
from mmstream.server import RunningServer, serve

DOC = Path(__file__).parents[1] / "docs" / "protocol.md"
FRAME = re.compile(r"^(?:([A-Z]) )?(C→|←S) (\{.*\})$")


def _examples() -> list[tuple[str, str, str]]:
    """(connection, direction, json) of every complete example frame; abbreviated ones
    (with ``...`` or ``<placeholders>``) are left out."""
    found = []
    for line in DOC.read_text().splitlines():
        match = FRAME.match(line)
        if match and "..." not in line and "<" not in line:
            found.append((match.group(1) or "", match.group(2), match.group(3)))
    return found


def test_every_example_frame_decodes() -> None:
    examples = _examples()
    assert sum(direction == "C→" for _, direction, _ in examples) >= 15
    assert sum(direction == "←S" for _, direction, _ in examples) >= 10
    requests: dict[tuple[str, object], Request] = {}
    for connection, direction, text in examples:
        if direction == "C→":
            request = decode_request(text)
            assert decode_request(encode_request(request)) == request
            requests[connection, request.id] = request
            continue
        body = json.loads(text)
        if "op" in body:  # an event
            decode_server_message(text)
            continue
        answered = requests[connection, body["re"]]
        reply = decode_server_message(text, expect=REPLY_TYPES[type(answered)])
        assert isinstance(reply, (ErrorReply, REPLY_TYPES[type(answered)]))


# -- the examples against the codec's encoding and a real server ---------------------------

_ABBREVIATION = [
    (re.compile(r",\s*\.\.\.(?=\s*[,}\]])"), ""),  # {"a":1,...} and {"a":1,...,"b":2}
    (re.compile(r"(?<=[{\[])\s*\.\.\.\s*,"), ""),  # {...,"b":2}
]
#: Values that differ from run to run (the doc shows plausible ones): only their type counts.
_VOLATILE = {
    "created_at",
    "last_accessed_at",
    "finalized_at",
    "reserved",
    "server",
    "generation",
    "time",
    "started_at",
    "duration",
}


def _parse(text: str) -> tuple[Any, bool]:
    """An example frame's JSON, and whether it was abbreviated with ``...``."""
    abbreviated = False
    for pattern, replacement in _ABBREVIATION:
        text, count = pattern.subn(replacement, text)
        abbreviated = abbreviated or count > 0
    return json.loads(text), abbreviated


def _shape_problems(doc: Any, actual: Any, abbreviated: bool, where: str = "") -> list[str]:
    """How ``actual`` (what the server sent) differs from ``doc`` (the example): the same
    fields in the same order (those shown, when abbreviated), the same values but for
    :data:`_VOLATILE` ones and placeholders (``"..."``, ``"<64 hex digits>"``)."""
    if isinstance(doc, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, the server sent {actual!r}"]
        shown = [key for key in actual if key in doc]
        missing = [key for key in doc if key not in actual]
        problems = [f"{where}: the server sends no {key!r}" for key in missing]
        if not abbreviated and list(actual) != list(doc):
            problems.append(f"{where}: the server's fields are {list(actual)}, not {list(doc)}")
        elif shown != [key for key in doc if key in actual]:
            problems.append(f"{where}: the server's field order is {shown}")
        for key in doc:
            if key not in actual:
                continue
            if key in _VOLATILE:
                if (doc[key] is None) != (actual[key] is None):
                    problems.append(f"{where}.{key}: {actual[key]!r}, not like {doc[key]!r}")
                continue
            problems += _shape_problems(doc[key], actual[key], abbreviated, f"{where}.{key}")
        return problems
    if isinstance(doc, list):
        if not isinstance(actual, list) or len(actual) != len(doc):
            return [f"{where}: the server sent {actual!r}"]
        by_stream = sorted(actual, key=lambda item: json.dumps(item.get("stream")))
        return [
            problem
            for index, (d, a) in enumerate(zip(doc, by_stream, strict=True))
            for problem in _shape_problems(d, a, abbreviated, f"{where}[{index}]")
        ]
    if isinstance(doc, str) and ("..." in doc or "<" in doc):
        return [] if isinstance(actual, str) else [f"{where}: {actual!r} is not a string"]
    if doc != actual or type(doc) is not type(actual):
        return [f"{where}: the server sent {actual!r}, the doc shows {doc!r}"]
    return []


def test_every_complete_server_example_is_the_codecs_encoding() -> None:
    """Decoded and encoded again the server's way, each complete example is unchanged: the
    doc shows exactly the fields (and their order) the server's encoder writes."""
    requests: dict[tuple[str, object], Request] = {}
    checked = 0
    for connection, direction, text in _examples():
        if direction == "C→":
            request = decode_request(text)
            requests[connection, request.id] = request
            continue
        body = json.loads(text)
        if "op" in body:
            event = decode_server_message(text)
            assert isinstance(event, Ack | End | ErrorEvent)
            encoded = encode_event(event)
        else:
            answered = requests[connection, body["re"]]
            reply = decode_server_message(text, expect=REPLY_TYPES[type(answered)])
            assert isinstance(reply, Reply)
            encoded = encode_reply(reply)
        assert json.dumps(json.loads(encoded)) == json.dumps(body), text
        checked += 1
    assert checked >= 12


@attrs.define
class _Peer:
    """One example connection: its socket, binary bytes received but not yet matched
    against a ``[binary n]`` line, and text frames received meanwhile."""

    ws: Any
    binary: int = 0
    texts: list[str] = attrs.Factory(list)

    async def next_text(self) -> str:
        while not self.texts:
            message = await self.ws.recv()
            if isinstance(message, bytes):
                self.binary += len(message)
            else:
                self.texts.append(message)
        return self.texts.pop(0)

    async def binary_bytes(self, count: int) -> None:
        while self.binary < count:
            message = await self.ws.recv()
            if isinstance(message, bytes):
                self.binary += len(message)
            else:
                self.texts.append(message)
        self.binary -= count


_LINE = re.compile(r"^(?:([A-Z]) )?(C→|←S) (.*?)\s*$")
_CONNECTION = re.compile(r"^# connection ([A-Z]) .*: ws://[^/]+(/[^\s,]*)")


def _transcripts() -> list[list[tuple[int, str, str, str]]]:
    """Each fenced block of frames: (line number, connection, direction, frame)."""
    blocks: list[list[tuple[int, str, str, str]]] = []
    inside = False
    for number, line in enumerate(DOC.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
            if inside:
                blocks.append([])
            continue
        if inside and (match := _LINE.match(line)):
            blocks[-1].append((number, match.group(1) or "", match.group(2), match.group(3)))
        elif inside and (match := _CONNECTION.match(line)):
            blocks[-1].append((number, match.group(1), "path", match.group(2)))
    return [block for block in blocks if any(d == "C→" for _, _, d, _ in block)]


async def _prepare(url: str, first: Request) -> bool:
    """The state each example starts from (on a server with no streams); False for the two
    examples that need a live uploader beside them and for the `stream-changed` one, whose
    message names two random generations (the codec test covers their frames)."""
    async with connect(url) as client:
        for stream in await client.list():
            await client.delete(stream.stream)
        match first.op, first.id:
            case ("tail", _) | ("read", 11):
                return False
            case ("append", 3):
                await client.create("show-42")
            case ("sync", 4) | ("finalize", 5):
                await client.create("show-42")
                await client.append("show-42", bytes(131072))
            case ("metadata", 11):
                await client.create("show-42")
                await client.append("show-42", bytes(131072))
            case ("append", 1):  # resuming
                await client.create("show-42")
                await client.append("show-42", bytes(3145728))
            case ("read", 6) | ("stat", 8) | ("delete", 10):
                await client.upload("show-42", bytes(131072))
            case ("list", 9):
                await client.upload("show-42", bytes(131072))
                await client.upload("show-43", bytes(1000))
    return True


async def _replay(url: str, block: list[tuple[int, str, str, str]]) -> list[str]:
    problems: list[str] = []
    paths = {connection: path for _, connection, kind, path in block if kind == "path"}
    peers: dict[str, _Peer] = {}
    async with AsyncExitStack() as stack:
        for number, connection, direction, frame in block:
            if direction == "path" or ("..." in frame and not frame.startswith("{")):
                continue  # a connection's URL, or "C→ [binary 65536] ..." (and so on)
            if connection not in peers:
                ws = await stack.enter_async_context(
                    ws_connect(url + paths.get(connection, "/v1"), subprotocols=[SUBPROTOCOL])
                )
                peers[connection] = _Peer(ws)
            peer = peers[connection]
            with trio.fail_after(10):
                if direction == "C→":
                    if frame.startswith("close"):
                        await peer.ws.aclose()
                    elif binary := re.match(r"\[binary (\d+)\]", frame):
                        await peer.ws.send(bytes(int(binary.group(1))))
                    else:
                        size = json.loads(frame.replace("<64 hex digits>", "")).get("size", 0)
                        await peer.ws.send(frame.replace("<64 hex digits>", _zeros_sha(size)))
                elif binary := re.match(r"\[binary (\d+)\]", frame):
                    await peer.binary_bytes(int(binary.group(1)))
                else:
                    doc, abbreviated = _parse(frame)
                    actual = json.loads(await peer.next_text())
                    # Acks are coalesced as time allows (and may precede a reply): skip
                    # those the example does not show.
                    while actual.get("op") == "ack" and (
                        doc.get("op") != "ack" or actual["offset"] < doc["offset"]
                    ):
                        actual = json.loads(await peer.next_text())
                    problems += [
                        f"docs/protocol.md:{number}: {problem}"
                        for problem in _shape_problems(doc, actual, abbreviated)
                    ]
    return problems


def _zeros_sha(size: int) -> str:
    return hashlib.sha256(bytes(size)).hexdigest()


async def test_every_example_exchange_is_what_a_real_server_says(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Each example exchange replayed against a real server (from the state it assumes):
    every reply and event the doc shows has the server's fields, in the server's order,
    with the server's values (timestamps and the like aside) and error messages."""
    config = Config(cache=CacheConfig(directory=tmp_path / "cache"), server=ServerConfig(port=0))
    server: RunningServer = await nursery.start(serve, config)
    problems: list[str] = []
    replayed = 0
    for block in _transcripts():
        first = next(frame for _, _, d, frame in block if d == "C→" and frame.startswith("{"))
        if await _prepare(server.url, decode_request(first)):
            problems += await _replay(server.url, block)
            replayed += 1
    assert replayed >= 10
    assert not problems, "\n".join(problems)
