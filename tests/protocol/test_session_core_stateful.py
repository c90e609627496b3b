"""The session core under any sequence of requests, with the driver played by the test: every
request is answered exactly once and in order, a binding is only ever ended once and only if
there was one, write rights follow the latest ``hello``, and a refused ``hello`` stops
everything."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from session_support import READER, WRITER, guarded, info

from mmstream.errors import OffsetConflictError
from mmstream.protocol import (
    Append,
    Finalize,
    Hello,
    List,
    Request,
    Stat,
    Sync,
    Tail,
    TailReply,
)
from mmstream.protocol.session import Apply, EndUpload, Send, Stop

STREAMS = ("live-1", "live-2", "other")


class Pipeline(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = guarded()
        self.next_id = 0
        self.answered: list[object] = []
        self.sent_ids: list[int] = []
        self.stopped = False
        self.writer = False  # the latest valid hello's token may write

    def _feed(self, request: Request) -> None:
        assert request.id is not None
        self.sent_ids.append(int(request.id))
        bound_before = self.s.upload
        actions = self.s.receive_request(request)
        ended = [a for a in actions if isinstance(a, EndUpload)]
        assert len(ended) <= 1
        if ended:
            assert bound_before is not None and ended[0].stream == bound_before.stream
        for action in actions:
            match action:
                case Send(message=message):
                    self.answered.append(message.re)  # type: ignore[union-attr]
                case Apply(request=applied, stream=stream):
                    assert applied is request
                    self.answered.append(self._carry_out(applied, stream).re)
                case Stop():
                    self.stopped = True

    def _carry_out(self, request: Request, stream: str | None) -> object:
        """The driver's part, with outcomes a real manager could give."""
        if isinstance(request, Append):
            assert stream is not None and self.writer  # the writer token covers every stream
            if request.offset is not None:  # a wrong offset: offset-conflict
                return self.s.failed(request, OffsetConflictError("x", actual=0))
            return self.s.appended(request, stream, 0)
        if isinstance(request, List):
            return self.s.listed(request, [info(name, 0) for name in STREAMS])
        if isinstance(request, Tail):
            assert stream is not None
            self.s.follow_started()
            return TailReply(re=request.id, stream=stream, offset=0)  # the driver sends it
        assert stream is not None
        return self.s.stat_reply(request, info(stream, 0))

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    @rule(token=st.sampled_from([WRITER, READER, "x" * 16, None]))
    def hello(self, token: str | None) -> None:
        if self.stopped:
            return
        self._feed(Hello(id=self._id(), token=token))
        if token in (WRITER, READER):
            self.writer = token == WRITER
            if not self.writer:
                assert self.s.upload is None  # a read-only grant keeps no binding

    @rule(stream=st.sampled_from(STREAMS), offset=st.sampled_from([None, 5]))
    def append(self, stream: str, offset: int | None) -> None:
        if not self.stopped:
            self._feed(Append(id=self._id(), stream=stream, offset=offset))

    @rule(
        op=st.sampled_from([Stat, Sync, Finalize, Tail]),
        stream=st.sampled_from(STREAMS),
    )
    def request(self, op: type[Stat | Sync | Finalize | Tail], stream: str) -> None:
        if not self.stopped:
            self._feed(op(id=self._id(), stream=stream))

    @rule()
    def listing(self) -> None:
        if not self.stopped:
            self._feed(List(id=self._id()))

    @rule()
    def tail_ends(self) -> None:
        self.s.follow_ended(now=0.0)

    @invariant()
    def every_request_is_answered_once_in_order(self) -> None:
        assert self.answered == self.sent_ids

    @invariant()
    def a_binding_only_with_write_rights(self) -> None:
        upload = self.s.upload
        if upload is not None:
            assert self.writer

    @invariant()
    def a_refused_hello_stops_everything(self) -> None:
        if self.stopped:
            assert self.s.stopping and not self.s.may_take()
            assert self.s.close.code == 1008

    @invariant()
    def errors_carry_their_request(self) -> None:
        assert all(isinstance(re, int) for re in self.answered)


TestPipeline = Pipeline.TestCase
