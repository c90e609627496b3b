"""The one ack rule of the session core, given the time: at once when the upload goes quiet,
every ``ack_bytes`` and ``ack_interval`` after the first unacknowledged byte while frames keep
coming (docs/protocol.md §5); and as a hypothesis state machine, that acks only grow, never
run ahead of what was written, and are never later than the rule allows."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from session_support import core, info

from mmstream.errors import StorageError
from mmstream.protocol import Ack, Append, Finalize, Sync
from mmstream.protocol.session import EndUpload, SessionCore


def bound(ack_bytes: int = 100, ack_interval: float = 0.05) -> SessionCore:
    s = core(ack_bytes=ack_bytes, ack_interval=ack_interval)
    s.appended(Append(stream="a"), "a", 0)
    return s


def test_a_quiet_upload_is_acknowledged_at_once() -> None:
    """A clip: its last frame written, nothing on its way: no clock to wait for."""
    s = bound(ack_bytes=1 << 20, ack_interval=60.0)
    s.written(16 * 1024, now=1.0)
    assert s.ack_due(1.0, quiet=False) is None
    ack = s.ack_due(1.0, quiet=True)
    assert ack == Ack(stream="a", offset=16 * 1024)
    assert s.ack_due(1.0, quiet=True) == ack  # due until it is on its way
    s.sent(ack)
    assert s.ack_due(1.0, quiet=True) is None


def test_while_frames_keep_coming_an_ack_every_ack_bytes() -> None:
    s = bound(ack_bytes=100)
    s.written(99, now=0.0)
    assert s.ack_due(0.0, quiet=False) is None
    s.written(100, now=0.0)
    assert s.ack_due(0.0, quiet=False) == Ack(stream="a", offset=100)


def test_while_frames_keep_coming_an_ack_by_the_interval_after_the_first_unacknowledged_byte() -> (
    None
):
    s = bound(ack_interval=0.05)
    s.written(10, now=1.00)
    s.written(20, now=1.04)  # not the time of the latest byte: of the first
    assert s.ack_due(1.04, quiet=False) is None
    assert s.ack_due(1.05, quiet=False) == Ack(stream="a", offset=20)
    s.sent(Ack(stream="a", offset=20))
    s.written(30, now=1.06)  # a fresh interval from the next unacknowledged byte
    assert s.ack_due(1.10, quiet=False) is None
    assert s.ack_due(1.11, quiet=False) == Ack(stream="a", offset=30)


def test_nothing_is_due_without_a_binding_or_new_bytes() -> None:
    s = core()
    assert s.ack_due(0.0, quiet=True) is None
    s.appended(Append(stream="a"), "a", 500)  # bound at its size: nothing new yet
    assert s.ack_due(100.0, quiet=True) is None


def test_sync_and_finalize_replies_count_as_acks_of_what_was_written() -> None:
    s = bound()
    s.written(50, now=0.0)
    s.stat_reply(Sync(stream="other"), info("other", 50))
    s.stat_reply(Sync(stream="a"), info("a", 80))  # grown by another writer: ours only
    assert s.ack_due(1.0, quiet=True) is None
    s.written(60, now=2.0)
    s.stat_reply(Finalize(stream="b"), info("a", 55))
    assert s.ack_due(2.0, quiet=True) == Ack(stream="a", offset=60)


def test_the_end_of_a_binding_owes_its_last_ack() -> None:
    s = bound()
    s.written(7, now=0.0)
    assert s.write_failed(StorageError("disk gone"))[0] == EndUpload(
        "a", 7, Ack(stream="a", offset=7), "failed: io-error"
    )
    assert s.ack_due(0.0, quiet=True) is None


class AckRule(RuleBasedStateMachine):
    """Bindings, writes, time passing, acks asked for quiet or not, sync replies and the end
    of bindings in any order, and acks the socket could not take at once: what the client is
    told stays true."""

    ACK_BYTES, INTERVAL = 1000, 0.05

    def __init__(self) -> None:
        super().__init__()
        self.s = core(ack_bytes=self.ACK_BYTES, ack_interval=self.INTERVAL)
        self.now = 0.0
        self.size = 0  # the stream's size (all bindings are of stream "a")
        self.told = 0  # the highest offset acknowledged to the client, by ack or reply
        self.first_unacked: float | None = None

    def _tell(self, offset: int) -> None:
        assert offset > self.told, (offset, self.told)  # acks only grow
        assert offset <= self.size  # never ahead of what was written
        self.told = offset
        self.first_unacked = None

    @rule()
    def append(self) -> None:
        for action in self.s.receive_request(Append(stream="a")):
            if isinstance(action, EndUpload) and action.ack is not None:
                self._tell(action.ack.offset)
        self.s.appended(Append(stream="a"), "a", self.size)
        self.told = max(self.told, self.size)  # the append reply says the size

    @precondition(lambda self: self.s.upload is not None)
    @rule(size=st.integers(1, 3000))
    def write(self, size: int) -> None:
        self.size += size
        if self.first_unacked is None:
            self.first_unacked = self.now
        self.s.written(self.size, self.now)

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.049, 0.05, 0.2]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(quiet=st.booleans(), refused=st.booleans())
    def ask(self, quiet: bool, refused: bool) -> None:
        unacked = self.s.upload is not None and self.size > self.told
        due_by_rule = unacked and (
            quiet
            or self.size - self.told >= self.ACK_BYTES
            or (self.first_unacked is not None and self.now - self.first_unacked >= self.INTERVAL)
        )
        ack = self.s.ack_due(self.now, quiet=quiet)
        assert (ack is not None) == due_by_rule
        if ack is not None and not refused:  # refused: the socket was busy, still due
            self.s.sent(ack)
            self._tell(ack.offset)
            assert ack.offset == self.size

    @precondition(lambda self: self.s.upload is not None)
    @rule()
    def sync(self) -> None:
        self.s.stat_reply(Sync(stream="a"), info("a", self.size))
        if self.size > self.told:
            self._tell(self.size)

    @precondition(lambda self: self.s.upload is not None)
    @rule()
    def fail(self) -> None:
        ended = self.s.write_failed(StorageError("disk gone"))[0]
        assert isinstance(ended, EndUpload)
        if ended.ack is not None:
            self._tell(ended.ack.offset)
        assert self.size == self.told  # nothing left unacknowledged by a binding that ended

    @invariant()
    def a_batch_ends_where_an_ack_falls_due(self) -> None:
        upload = self.s.upload
        if upload is not None:
            assert upload.offset + self.s.batch_limit() == upload.acked + self.ACK_BYTES


TestAckRule = AckRule.TestCase
