"""docs/protocol.md and the codec agree: every complete example frame in the document
decodes, and each example reply decodes as the reply to the request it answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mmstream.protocol import (
    REPLY_TYPES,
    ErrorReply,
    Request,
    decode_request,
    decode_server_message,
    encode_request,
)

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
