"""The session's protocol state without sockets: acks, batches, unbound frames, stopping."""

from __future__ import annotations

import pytest

from mmstream.auth import Authorizer
from mmstream.config import AuthConfig, TokenConfig
from mmstream.errors import ProtocolError, UnauthorizedError
from mmstream.protocol import Append, Create, Hello, Stat
from mmstream.protocol.session import BATCH_BYTES, Ack, AckTiming, SessionState

WRITER, READER = "w" * 16, "r" * 16


def state(ack_bytes: int = 100, drain: int = 3) -> SessionState:
    return SessionState(ack_bytes=ack_bytes, drain=drain)


def test_the_first_unacknowledged_bytes_wait_for_the_clock_once() -> None:
    s = state()
    s.bind("a", 10)
    assert s.written(20) is AckTiming.AT_TICK
    assert s.written(30) is AckTiming.NOTHING  # already held at the clock
    assert s.tick() == Ack("a", 30)
    assert s.tick() == Ack("a", 30)  # not sent yet: still due
    s.sent(Ack("a", 30))
    assert s.tick() is None
    assert s.written(40) is AckTiming.AT_TICK  # due again after the tick


def test_ack_bytes_unacknowledged_are_acknowledged_now() -> None:
    s = state(ack_bytes=100)
    s.bind("a", 0)
    assert s.written(99) is AckTiming.AT_TICK
    assert s.written(100) is AckTiming.NOW
    assert s.take_ack() == Ack("a", 100)
    assert s.take_ack() is None


def test_a_batch_ends_where_an_ack_falls_due() -> None:
    s = state(ack_bytes=100)
    assert s.batch_limit() == BATCH_BYTES  # nothing bound
    s.bind("a", 1000)
    assert s.batch_limit() == 100
    s.written(1030)
    assert s.batch_limit() == 70
    big = state(ack_bytes=10 * BATCH_BYTES)
    big.bind("a", 0)
    assert big.batch_limit() == BATCH_BYTES


def test_sync_and_finalize_replies_count_as_acks_of_what_was_written() -> None:
    s = state()
    s.bind("a", 0)
    s.written(50)
    s.acknowledged_by_reply("other", 50)
    assert s.tick() == Ack("a", 50)
    s.acknowledged_by_reply("a", 80)  # the stream grew by another writer: only ours count
    assert s.tick() is None


def test_unbind_owes_the_last_ack_and_ends_the_binding() -> None:
    s = state()
    assert s.unbind() is None
    s.bind("a", 0)
    s.written(7)
    ended = s.unbind()
    assert ended is not None
    upload, ack = ended
    assert (upload.stream, upload.offset, ack) == ("a", 7, Ack("a", 7))
    assert s.upload is None and s.tick() is None
    assert s.written(9) is AckTiming.NOTHING


def test_only_the_first_unbound_frame_is_reported_and_none_after_a_failure() -> None:
    s = state()
    assert s.unbound_frame()
    assert not s.unbound_frame()
    s.bind("a", 0)
    s.unbind()
    s.binding_failed()  # a write failed and was reported
    assert not s.unbound_frame()
    s.bind("a", 0)  # a new binding reports again once it ends
    s.unbind()
    assert s.unbound_frame()


def test_stopping_applies_at_most_a_queues_worth_or_nothing() -> None:
    s = state(drain=2)
    assert s.may_take() and s.may_take() and s.may_take()  # not stopping: always
    s.stop()
    assert [s.may_take() for _ in range(4)] == [True, True, False, False]
    refused = state(drain=2)
    refused.stop(drain=False)  # a refused hello: nothing more is applied
    assert not refused.may_take()


@pytest.mark.parametrize("ack_bytes", [0, -1])
def test_an_ack_interval_of_no_bytes_is_refused(ack_bytes: int) -> None:
    with pytest.raises(ValueError):
        SessionState(ack_bytes=ack_bytes, drain=1)


def guarded(bound: str | None = None) -> SessionState:
    tokens = (TokenConfig(WRITER), TokenConfig(READER, scopes=("read",), streams="live-*"))
    return SessionState(
        ack_bytes=100, drain=3, authorizer=Authorizer(AuthConfig(tokens=tokens)), bound=bound
    )


def test_without_access_control_every_request_is_allowed() -> None:
    s = state()
    assert s.authorize(Create(stream="a")) == "a"
    s.hello(None)
    assert s.grant is None and not s.stopping


def test_nothing_but_hello_before_a_valid_token() -> None:
    s = guarded()
    with pytest.raises(UnauthorizedError):
        s.authorize(Stat(stream="live-1"))
    assert s.authorize(Hello(token=READER)) is None  # hello itself is always heard
    s.hello(READER)
    assert s.authorize(Stat(stream="live-1")) == "live-1"
    with pytest.raises(UnauthorizedError):
        s.authorize(Stat(stream="other"))  # outside the token's streams
    with pytest.raises(UnauthorizedError):
        s.authorize(Append(stream="live-1"))  # read-only


def test_a_wrong_token_stops_the_session_with_nothing_more_applied() -> None:
    s = guarded()
    with pytest.raises(UnauthorizedError):
        s.hello("x" * 16)
    assert s.stopping and not s.may_take()


def test_a_read_only_hello_ends_the_write_rights_of_the_binding() -> None:
    s = guarded()
    s.hello(WRITER)
    s.bind("live-1", 0)
    assert s.may_keep_upload()
    s.hello(READER)
    assert not s.may_keep_upload()


def test_the_url_stream_is_the_one_acted_on() -> None:
    s = guarded(bound="live-2")
    s.hello(WRITER)
    assert s.authorize(Stat()) == "live-2"
    with pytest.raises(ProtocolError):
        s.authorize(Stat(stream="other"))
