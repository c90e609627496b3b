"""The v1 codec, synchronously: every message round-trips, every bad request is refused."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmstream.errors import (
    ChecksumMismatchError,
    MmstreamError,
    NoSpaceError,
    OffsetConflictError,
    OutOfRangeError,
    ProtocolError,
    StorageError,
    StreamNotFoundError,
    TooLargeError,
)
from mmstream.protocol import (
    MAX_OFFSET,
    REPLY_TYPES,
    REQUEST_TYPES,
    WIRE_ERRORS,
    Ack,
    Append,
    AppendReply,
    Create,
    Delete,
    End,
    ErrorEvent,
    ErrorReply,
    Finalize,
    Hello,
    HelloReply,
    List,
    ListReply,
    MalformedRequestError,
    Metadata,
    OkReply,
    Read,
    ReadReply,
    Request,
    Stat,
    StatReply,
    StreamStat,
    Sync,
    Tail,
    TailReply,
    TitleMark,
    decode_request,
    decode_server_message,
    encode_ack,
    encode_event,
    encode_reply,
    encode_request,
    error_event,
    error_reply,
    exception_from_wire,
    internal_error_reply,
)

SHA = "ab" * 32
STAT = StreamStat(
    stream="s1",
    status="uploading",
    content_type="audio/wav",
    metadata={"title": "Morning show"},
    size=10,
    durable_offset=4,
    reserved=65536,
    created_at=1.5,
    last_accessed_at=2,
    finalized_at=None,
    sha256=None,
    error=None,
)

REQUESTS: list[Request] = [
    Hello(id=1, token="t0ken"),
    Hello(),
    Create(id="c", stream="s1", content_type="audio/wav", metadata={"a": "b"}),
    Create(stream="s1"),
    Append(id=2, stream="s1", offset=0),
    Append(id=3),
    Sync(id=4, stream="s1"),
    Finalize(id=5, stream="s1", size=MAX_OFFSET, sha256=SHA),
    Finalize(id=6),
    Read(id=7, stream="s1", offset=5, length=100),
    Read(id=8, stream="s1"),
    Tail(id=9, stream="s1", offset=0),
    Tail(id=10, stream="s1"),
    Stat(id=11, stream="s1"),
    List(id=-(2**63)),
    Delete(id="x" * 64, stream="s1"),
    Metadata(id=12, stream="s1", title="Guns N' Roses - Don't Cry"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=repr)
def test_requests_round_trip(request_: Request) -> None:
    text = encode_request(request_)
    assert json.loads(text)["op"] == request_.op
    assert decode_request(text) == request_
    assert decode_request(text.encode()) == request_


def test_every_op_is_covered() -> None:
    assert {type(r) for r in REQUESTS} == set(REQUEST_TYPES.values())


def test_wire_example_decodes() -> None:
    text = '{"op":"append","id":7,"stream":"show-42","offset":1048576}'
    assert decode_request(text) == Append(id=7, stream="show-42", offset=1048576)


def test_token_never_in_repr() -> None:
    assert "t0ken" not in repr(Hello(token="t0ken"))
    assert "t0ken" not in str(decode_request('{"op":"hello","token":"t0ken"}'))


REPLIES = [
    (Hello, HelloReply(re=1, protocol="mmstream.v1", server="mmstream 0.1", max_message_size=4 << 20,
                       ack_bytes=1 << 20, ack_interval=0.05)),
    (Create, StatReply(re="c", stat=STAT)),
    (Append, AppendReply(re=2, stream="s1", offset=10)),
    (Sync, StatReply(re=None, stat=STAT)),
    (Stat, StatReply(re=8, stat=attrs.evolve(STAT, duration=3601.25, started_at=1.25))),
    (Read, ReadReply(re=7, stream="s1", offset=5, length=5)),
    (Tail, TailReply(re=9, stream="s1", offset=0)),
    (List, ListReply(re=10, streams=[STAT, STAT])),
    (List, ListReply(re=10, streams=[])),
    (Delete, OkReply(re=12)),
    (Metadata, StatReply(re=12, stat=attrs.evolve(STAT, titles=(TitleMark(title="t", offset=3, time=1.5),)))),
]  # fmt: skip


@pytest.mark.parametrize(("request_type", "reply"), REPLIES, ids=repr)
def test_replies_round_trip(request_type: type[Request], reply: OkReply) -> None:
    text = encode_reply(reply)
    body = json.loads(text)
    assert body["ok"] is True and body["re"] == reply.re and "op" not in body
    assert decode_server_message(text, expect=REPLY_TYPES[request_type]) == reply


def test_every_reply_type_is_covered() -> None:
    assert {type(reply) for _, reply in REPLIES} == set(REPLY_TYPES.values())


@pytest.mark.parametrize(
    "event",
    [
        Ack(stream="s1", offset=1 << 40),
        End(stream="s1", size=10, sha256=SHA),
        End(stream="s1", size=3, status="error"),
        ErrorEvent(stream="s1", code="io-error", message="disk", extra={"errno": 5}),
        ErrorEvent(code="bad-request", message="binary frame with no upload bound"),
    ],
    ids=repr,
)
def test_events_round_trip(event: Ack | End | ErrorEvent) -> None:
    text = encode_event(event)
    assert json.loads(text)["op"] == event.op
    assert decode_server_message(text) == event


def test_error_reply_shape_and_round_trip() -> None:
    reply = error_reply(7, OffsetConflictError("stream s1 is at 512", actual=512))
    text = encode_reply(reply)
    assert json.loads(text) == {
        "re": 7,
        "ok": False,
        "error": {"code": "offset-conflict", "message": "stream s1 is at 512", "offset": 512},
    }
    assert decode_server_message(text) == reply
    exc = exception_from_wire(reply)
    assert isinstance(exc, OffsetConflictError) and exc.actual == 512


@pytest.mark.parametrize("code", sorted(WIRE_ERRORS))
def test_every_wire_code_maps_back_to_its_exception(code: str) -> None:
    exc = exception_from_wire(ErrorReply(re=1, code=code, message="m"))
    assert isinstance(exc, WIRE_ERRORS[code]) and exc.code == code
    assert error_reply(1, exc).code == code


@pytest.mark.parametrize(
    ("exc", "code", "extra"),
    [
        (StreamNotFoundError("no stream 'x'"), "not-found", {}),
        (OutOfRangeError("offset 9 is past the end (4)"), "out-of-range", {}),
        (TooLargeError("too big"), "too-large", {}),
        (ChecksumMismatchError("sha256 differs"), "checksum-mismatch", {}),
        (StorageError("fsync failed", errno=5), "io-error", {"errno": 5}),
        (NoSpaceError("disk full", errno=28), "no-space", {"errno": 28}),
        (ProtocolError("bad"), "bad-request", {}),
        (MmstreamError("oops"), "internal", {}),
    ],
)
def test_error_mapping(exc: MmstreamError, code: str, extra: dict[str, Any]) -> None:
    reply = error_reply("r", exc)
    assert (reply.code, reply.message, dict(reply.extra)) == (code, exc.message, extra)
    event = error_event("s1", exc)
    assert (event.code, event.stream, dict(event.extra)) == (code, "s1", extra)


def test_non_wire_codes_go_out_as_internal() -> None:
    from mmstream.errors import ConfigError

    assert error_reply(1, ConfigError("x")).code == "internal"
    assert internal_error_reply(3) == ErrorReply(
        re=3, code="internal", message="internal server error"
    )


def test_unknown_code_from_a_newer_server_stays_visible() -> None:
    exc = exception_from_wire(ErrorReply(re=1, code="rate-limited", message="slow down"))
    assert type(exc) is MmstreamError and exc.code == "rate-limited"


BAD_REQUESTS = [
    ("", "not a JSON text"),
    ("{", "not a JSON text"),
    ("NaN", "not a JSON text"),
    ('{"op":"read","offset":NaN}', "not a JSON text"),
    ("[" * 50_000, "not a JSON text"),
    (b"\xff\xfe", "invalid UTF-8"),
    ('"create"', "expected a JSON object"),
    ("[1, 2]", "expected a JSON object"),
    ("null", "expected a JSON object"),
    ("{}", "missing field 'op'"),
    ('{"op":"explode"}', "unknown op 'explode'"),
    ('{"op":5}', "unknown op '5'"),
    ('{"op":["read"]}', "unknown op"),
    ('{"op":"read","stream":"s","bogus":1}', "unknown field(s) 'bogus'"),
    ('{"op":"list","stream":"s"}', "unknown field(s) 'stream'"),
    ('{"op":"hello","stream":"s"}', "unknown field(s) 'stream'"),
    ('{"op":"read","re":1}', "unknown field(s) 're'"),
    ('{"op":"stat","stream":5}', "stream: expected a string"),
    ('{"op":"stat","stream":null,"id":true}', "id: expected a 64-bit integer"),
    ('{"op":"stat","id":1.5}', "id: expected"),
    ('{"op":"stat","id":[1]}', "id: expected"),
    ('{"op":"stat","id":' + str(2**63) + "}", "id: expected"),
    ('{"op":"stat","id":"' + "x" * 65 + '"}', "id: expected"),
    ('{"op":"stat","stream":"' + "s" * 257 + '"}', "stream: longer than 256"),
    ('{"op":"stat","stream":["s"]}', "stream: expected a string"),
    ('{"op":"read","offset":-1}', "offset: expected an integer in 0..2**63-1, got -1"),
    ('{"op":"read","offset":' + str(-(2**63)) + "}", "offset: expected an integer"),
    ('{"op":"read","offset":' + str(2**63) + "}", "offset: expected an integer"),
    ('{"op":"read","offset":' + str(2**64) + "}", "offset: expected an integer"),
    ('{"op":"read","offset":1.0}', "offset: expected an integer"),
    ('{"op":"read","offset":1e999}', "offset: expected an integer"),
    ('{"op":"read","offset":"5"}', "offset: expected an integer"),
    ('{"op":"read","offset":true}', "offset: expected an integer"),
    ('{"op":"read","offset":null}', "offset: expected an integer"),
    ('{"op":"read","offset":0,"length":-5}', "length: expected an integer"),
    ('{"op":"append","offset":false}', "offset: expected an integer"),
    ('{"op":"tail","offset":{}}', "offset: expected an integer"),
    ('{"op":"finalize","size":-1}', "size: expected an integer"),
    ('{"op":"finalize","sha256":"ABAB"}', "sha256: expected 64 lowercase hex"),
    ('{"op":"finalize","sha256":"' + "A" * 64 + '"}', "sha256: expected 64 lowercase hex"),
    ('{"op":"finalize","sha256":"' + "g" * 64 + '"}', "sha256: expected 64 lowercase hex"),
    ('{"op":"create","content_type":7}', "content_type: expected a string"),
    ('{"op":"create","content_type":"' + "a" * 256 + '"}', "content_type: longer than 255"),
    ('{"op":"create","metadata":[1]}', "metadata: expected an object of strings"),
    ('{"op":"create","metadata":"x"}', "metadata: expected an object of strings"),
    ('{"op":"create","metadata":{"k":1}}', "metadata.k: expected a string"),
    ('{"op":"hello","token":5}', "token: expected a string"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), BAD_REQUESTS, ids=[r for _, r in BAD_REQUESTS])
def test_bad_requests_are_refused_with_a_reason(text: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedRequestError) as info:
        decode_request(text)
    assert reason in str(info.value)
    assert info.value.code == "bad-request" and info.value.close_code is None
    assert len(str(info.value)) < 400


def test_error_echoes_the_request_id_when_readable() -> None:
    with pytest.raises(MalformedRequestError) as info:
        decode_request('{"op":"read","id":"r7","offset":-1}')
    assert info.value.request_id == "r7"
    assert error_reply(info.value.request_id, info.value).re == "r7"
    with pytest.raises(MalformedRequestError) as info:
        decode_request('{"op":"nope","id":9}')
    assert info.value.request_id == 9
    with pytest.raises(MalformedRequestError) as info:
        decode_request('{"op":"nope","id":true}')
    assert info.value.request_id is None


def test_token_not_echoed_in_errors() -> None:
    with pytest.raises(MalformedRequestError) as info:
        decode_request('{"op":"hello","token":"s3cret","extra":1}')
    assert "s3cret" not in str(info.value)


def test_messages_validate_when_built_by_code() -> None:
    with pytest.raises(ValueError, match="offset"):
        AppendReply(re=1, stream="s", offset=-1)
    with pytest.raises(ValueError, match="size"):
        End(stream="s", size=True)


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{}",
        '{"re":1}',
        '{"re":1,"ok":"yes"}',
        '{"re":1,"ok":false}',
        '{"re":1,"ok":false,"error":{"message":"m"}}',
        '{"op":"ack","stream":"s"}',
        '{"op":"ack","stream":"s","offset":-3}',
        '{"op":"warp"}',
        '{"op":"error","error":"x"}',
        '{"re":1,"ok":true}',
        "{nope",
    ],
)
def test_malformed_server_messages_raise_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode_server_message(text)


def test_server_messages_ignore_unknown_fields() -> None:
    text = '{"re":1,"ok":true,"stream":"s","offset":3,"future":[1,2]}'
    assert decode_server_message(text, expect=AppendReply) == AppendReply(
        re=1, stream="s", offset=3
    )
    assert decode_server_message('{"op":"end","stream":"s","size":2}') == End(stream="s", size=2)


def test_hostile_values_are_not_echoed_at_length() -> None:
    """Found by the fuzzer: an error must not repeat a huge hostile value back."""
    for field in ("offset", "id", "stream", "sha256"):
        with pytest.raises(MalformedRequestError) as info:
            decode_request(json.dumps({"op": "read", field: {"k": "a" * 100_000}}))
        assert len(str(info.value)) < 200, field


# -- the ack's direct formatting -------------------------------------------------------------


@given(
    stream=st.from_regex(r"[A-Za-z0-9_.\-]{1,128}", fullmatch=True),
    offset=st.integers(min_value=0, max_value=MAX_OFFSET),
)
def test_encode_ack_is_encode_event_of_an_ack(stream: str, offset: int) -> None:
    assert encode_ack(stream, offset) == encode_event(Ack(stream=stream, offset=offset))


@given(stream=st.text(max_size=300), offset=st.integers(min_value=-5, max_value=MAX_OFFSET + 5))
def test_encode_ack_of_anything_else_is_the_general_way(stream: str, offset: int) -> None:
    try:
        expected = encode_event(Ack(stream=stream, offset=offset))
    except ValueError as exc:
        with pytest.raises(type(exc)):
            encode_ack(stream, offset)
    else:
        assert encode_ack(stream, offset) == expected
        assert json.loads(expected) == {"op": "ack", "stream": stream, "offset": offset}
