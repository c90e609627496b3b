"""The session core without sockets: auth state, upload binding, which reply or error answers
which request, pipelining order, limits and close reasons (acks: test_session_core_acks.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from session_support import READER, WRITER, core, guarded, info, sent

from mmstream.errors import OffsetConflictError, StreamBusyError, StreamNotFoundError
from mmstream.protocol import (
    Ack,
    Append,
    AppendReply,
    Create,
    ErrorEvent,
    ErrorReply,
    Finalize,
    Hello,
    HelloReply,
    List,
    ListReply,
    Stat,
    StatReply,
    Sync,
    Tail,
    encode_request,
)
from mmstream.protocol.session import (
    BATCH_BYTES,
    CLOSE_DONE,
    CLOSE_EVICTED,
    CLOSE_IDLE,
    CLOSE_NO_HELLO,
    CLOSE_SHUTDOWN,
    CLOSE_UNAUTHORIZED,
    Action,
    Apply,
    EndUpload,
    Send,
    SessionLimits,
    Stop,
)


def error_code(actions: Sequence[Action]) -> str:
    (message,) = sent(list(actions))
    assert isinstance(message, ErrorReply | ErrorEvent), message
    return message.code


# -- requests, replies, errors --------------------------------------------------------------


def test_a_request_is_handed_to_the_driver_with_the_stream_it_acts_on() -> None:
    s = core()
    assert s.receive_text(encode_request(Stat(id=1, stream="a"))) == [
        Apply(Stat(id=1, stream="a"), "a")
    ]
    assert s.receive_request(List(id=2)) == [Apply(List(id=2), None)]


def test_malformed_text_is_answered_with_bad_request_and_its_id() -> None:
    s = core()
    (reply,) = sent(s.receive_text('{"op":"stat","id":7,"stream":"a","bogus":1}'))
    assert isinstance(reply, ErrorReply) and reply.re == 7 and reply.code == "bad-request"
    (reply,) = sent(s.receive_text("not json"))
    assert isinstance(reply, ErrorReply) and reply.re is None
    assert not s.stopping  # a bad request never closes the connection


def test_hello_is_answered_by_the_core_with_the_servers_limits() -> None:
    s = core(ack_bytes=4096, ack_interval=0.25)
    (reply,) = sent(s.receive_request(Hello(id=1)))
    assert reply == HelloReply(
        re=1,
        protocol="mmstream.v1",
        server="mmstream",
        max_message_size=SessionLimits(ack_bytes=1).max_message_size,
        ack_bytes=4096,
        ack_interval=0.25,
    )


def test_a_storage_failure_is_its_error_code_and_a_bug_is_internal() -> None:
    s = core()
    request = Stat(id=3, stream="a")
    assert s.failed(request, StreamNotFoundError("no such stream a")).code == "not-found"
    internal = s.failed(request, RuntimeError("secret detail"))
    assert internal.code == "internal" and "secret" not in internal.message


def test_results_become_replies() -> None:
    s = core()
    assert s.stat_reply(Stat(id=1, stream="a"), info("a", 5)) == StatReply(
        re=1, stat=s.stat_reply(Stat(id=1, stream="a"), info("a", 5)).stat
    )
    listed = s.listed(List(id=2), [info("a", 1), info("b", 2)])
    assert isinstance(listed, ListReply) and [x.stream for x in listed.streams] == ["a", "b"]


# -- auth state ----------------------------------------------------------------------------


def test_without_access_control_every_request_is_allowed() -> None:
    s = core()
    assert s.receive_request(Create(stream="a")) == [Apply(Create(stream="a"), "a")]
    assert isinstance(sent(s.receive_request(Hello(token=None)))[0], HelloReply)
    assert s.grant is None and not s.stopping and s.hello_deadline() is None


def test_nothing_but_hello_before_a_valid_token() -> None:
    s = guarded()
    assert error_code(s.receive_request(Stat(stream="live-1"))) == "unauthorized"
    assert isinstance(sent(s.receive_request(Hello(token=READER)))[0], HelloReply)
    assert s.receive_request(Stat(stream="live-1")) == [Apply(Stat(stream="live-1"), "live-1")]
    assert error_code(s.receive_request(Stat(stream="other"))) == "unauthorized"  # not its streams
    assert error_code(s.receive_request(Append(stream="live-1"))) == "unauthorized"  # read-only


def test_a_wrong_token_stops_the_session_with_nothing_more_applied() -> None:
    s = guarded()
    actions = s.receive_request(Hello(id=1, token="x" * 16))
    assert actions[0] == Stop(CLOSE_UNAUTHORIZED)
    assert error_code(actions) == "unauthorized"
    assert s.stopping and not s.may_take() and s.close == CLOSE_UNAUTHORIZED


def test_a_read_only_hello_ends_the_binding_and_later_frames_are_reported() -> None:
    s = guarded()
    s.receive_request(Hello(token=WRITER))
    s.appended(Append(stream="live-1"), "live-1", 0)
    s.written(40, now=1.0)
    assert isinstance(sent(s.receive_request(Hello(id=2, token=WRITER)))[0], HelloReply)
    assert s.upload is not None  # the same rights: the binding stays
    actions = s.receive_request(Hello(id=3, token=READER))
    assert actions[0] == EndUpload(
        "live-1",
        40,
        Ack(stream="live-1", offset=40),
        "the new hello's token does not allow writing it",
    )
    assert isinstance(sent(actions)[-1], HelloReply)
    assert s.upload is None
    assert error_code(s.unbound_frames()) == "bad-request"


def test_the_url_stream_is_the_one_acted_on() -> None:
    s = guarded(bound="live-2")
    s.receive_request(Hello(token=WRITER))
    assert s.receive_request(Stat()) == [Apply(Stat(), "live-2")]
    assert error_code(s.receive_request(Stat(stream="other"))) == "bad-request"


def test_without_a_valid_hello_in_time_the_connection_closes_with_nothing_applied() -> None:
    s = guarded(opened_at=100.0)
    assert s.hello_deadline() == 110.0
    assert s.hello_check() == Stop(CLOSE_NO_HELLO)
    assert not s.may_take() and s.close == CLOSE_NO_HELLO
    in_time = guarded()
    in_time.receive_request(Hello(token=READER))
    assert in_time.hello_check() is None and not in_time.stopping


# -- the upload binding --------------------------------------------------------------------


def test_append_ends_the_last_binding_and_binds_nothing_until_it_succeeds() -> None:
    s = core()
    assert s.receive_request(Append(id=1, stream="a")) == [Apply(Append(id=1, stream="a"), "a")]
    assert s.appended(Append(id=1, stream="a"), "a", 10) == AppendReply(re=1, stream="a", offset=10)
    s.written(30, now=0.0)
    actions = s.receive_request(Append(id=2, stream="b", offset=0))
    assert actions == [
        EndUpload("a", 30, Ack(stream="a", offset=30), "a new append"),
        Apply(Append(id=2, stream="b", offset=0), "b"),
    ]
    # The append failed (offset-conflict): its frames are dropped silently.
    assert error_code([Send(s.failed(Append(id=2), OffsetConflictError("x", actual=5)))]) == (
        "offset-conflict"
    )
    assert s.upload is None and s.unbound_frames() == []


def test_finalize_of_the_bound_stream_hands_the_binding_over() -> None:
    s = core()
    s.appended(Append(stream="a"), "a", 0)
    s.written(7, now=0.0)
    other = s.receive_request(Finalize(id=1, stream="b"))
    assert other == [Apply(Finalize(id=1, stream="b"), "b")]  # another stream: bound still
    assert s.upload is not None
    actions = s.receive_request(Finalize(id=2, stream="a"))
    assert actions == [
        EndUpload("a", 7, Ack(stream="a", offset=7), "finalize", hand_over=True),
        Apply(Finalize(id=2, stream="a"), "a"),
    ]
    assert s.upload is None


def test_only_the_first_unbound_frame_is_reported_and_none_after_a_failure() -> None:
    s = core()
    assert error_code(s.unbound_frames()) == "bad-request"
    assert s.unbound_frames() == []
    s.appended(Append(stream="a"), "a", 0)
    s.written(5, now=0.0)
    actions = s.write_failed(StreamBusyError("stream a has another writer"))
    assert actions[0] == EndUpload("a", 5, Ack(stream="a", offset=5), "failed: busy")
    assert sent(actions)[-1] == ErrorEvent(
        stream="a", code="busy", message="stream a has another writer"
    )
    assert s.unbound_frames() == []  # already reported once
    s.appended(Append(stream="a"), "a", 5)  # a new binding reports again once it ends
    assert s.end() == [EndUpload("a", 5, None, "connection closing")]
    assert error_code(s.unbound_frames()) == "bad-request"


def test_a_batch_ends_where_an_ack_falls_due() -> None:
    s = core(ack_bytes=100)
    assert s.batch_limit() == BATCH_BYTES  # nothing bound
    s.appended(Append(stream="a"), "a", 1000)
    assert s.batch_limit() == 100
    s.written(1030, now=0.0)
    assert s.batch_limit() == 70
    big = core(ack_bytes=10 * BATCH_BYTES)
    big.appended(Append(stream="a"), "a", 0)
    assert big.batch_limit() == BATCH_BYTES


# -- pipelining, limits, stopping ------------------------------------------------------------


def test_one_tail_per_connection() -> None:
    s = core()
    assert s.receive_request(Tail(id=1, stream="a")) == [Apply(Tail(id=1, stream="a"), "a")]
    s.follow_started()
    assert error_code(s.receive_request(Tail(id=2, stream="b"))) == "bad-request"
    s.follow_ended(now=5.0)
    assert s.receive_request(Tail(id=3, stream="b")) == [Apply(Tail(id=3, stream="b"), "b")]


def test_pipelined_requests_are_answered_in_the_order_they_came() -> None:
    """A client sends append, its frames, sync and finalize back to back: each action list
    comes in message order, the ack before the reply that counts as one."""
    s = core(ack_bytes=1000)
    order: list[object] = []
    order += s.receive_request(Append(id=1, stream="a"))
    order.append(s.appended(Append(id=1, stream="a"), "a", 0))
    s.written(10, now=0.0)
    order += s.receive_request(Sync(id=2, stream="a"))
    order.append(s.stat_reply(Sync(id=2, stream="a"), info("a", 10)))
    assert s.ack_due(0.0, quiet=True) is None  # the sync reply acknowledged it
    s.written(25, now=0.0)
    order += s.receive_request(Finalize(id=3, stream="a", size=25))
    order.append(s.stat_reply(Finalize(id=3, stream="a"), info("a", 25)))
    kinds = [type(x).__name__ for x in order]
    assert kinds == [
        "Apply",
        "AppendReply",
        "Apply",
        "StatReply",
        "EndUpload",
        "Apply",
        "StatReply",
    ]
    assert order[4] == EndUpload("a", 25, Ack(stream="a", offset=25), "finalize", hand_over=True)


def test_stopping_applies_at_most_a_queues_worth_or_nothing() -> None:
    s = core(drain=2)
    assert s.may_take() and s.may_take() and s.may_take()  # not stopping: always
    assert s.shutdown() == Stop(CLOSE_SHUTDOWN)
    assert [s.may_take() for _ in range(4)] == [True, True, False, False]
    assert s.close == CLOSE_SHUTDOWN
    evicted = core(drain=1)
    assert evicted.evicted() == Stop(CLOSE_EVICTED) and evicted.close.code == 1013
    broken = core()
    broken.broken("read of a failed: io-error")
    assert broken.close.code == 1011 and not broken.may_take()
    assert core().close == CLOSE_DONE


def test_the_idle_timeout_counts_only_while_waiting_and_not_following() -> None:
    s = core(idle_timeout=10.0)
    assert s.idle_check(now=0.0) == 10.0  # working: look again a timeout later
    s.waiting(now=1.0)
    assert s.idle and s.idle_check(now=5.0) == 11.0
    s.follow_started()
    assert not s.idle and s.idle_check(now=20.0) == 30.0  # a follower is never idle
    s.follow_ended(now=20.0)  # idle from the end of the tail
    assert s.idle_check(now=25.0) == 30.0
    assert s.idle_check(now=30.0) == Stop(CLOSE_IDLE)
    assert s.stopping and s.close == CLOSE_IDLE


@pytest.mark.parametrize("ack_bytes", [0, -1])
def test_an_ack_interval_of_no_bytes_is_refused(ack_bytes: int) -> None:
    with pytest.raises(ValueError):
        SessionLimits(ack_bytes=ack_bytes)
