"""StreamManager against a plain in-memory model, with "close the manager and reopen it" steps.

The manager lives in a Trio run on a helper thread (a small portal); each rule calls into it
with ``trio.from_thread.run``. ``sync_policy = "always"`` makes every acknowledged byte
durable, so after a reopen the model is exact: every stream is where it was.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from streams_support import BUILTIN_BACKENDS, make_config

from mmstream.config import ByteSize
from mmstream.errors import (
    ChecksumMismatchError,
    MmstreamError,
    NotUploadingError,
    OffsetConflictError,
    OutOfRangeError,
    StreamExistsError,
    StreamNotFoundError,
)
from mmstream.streams import StreamManager, StreamStatus, open_stream_manager

T = TypeVar("T")
IDS = st.sampled_from(["s0", "s1", "s2"])


class ManagerPortal:
    """A StreamManager running in its own Trio loop on a helper thread."""

    def __init__(self, directory: Path, backend: str) -> None:
        self.config = make_config(
            directory, backend, initial_size=ByteSize(64), sync_policy="always"
        )
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    async def _main(self) -> None:
        self._stop = trio.Event()
        try:
            async with open_stream_manager(self.config) as manager:
                self.manager = manager
                self.token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    def run(self, fn: Callable[[StreamManager], Awaitable[T]]) -> T:
        async def call() -> T:
            return await fn(self.manager)

        return trio.from_thread.run(call, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join()
        if self._failure is not None:
            raise self._failure


@attrs.define
class Model:
    data: bytearray = attrs.Factory(bytearray)
    status: StreamStatus = StreamStatus.UPLOADING


class StreamManagerMachine(RuleBasedStateMachine):
    backend = "file"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="mmstream-stateful-"))
        self.portal = ManagerPortal(self.directory / "cache", self.backend)
        self.model: dict[str, Model] = {}

    def teardown(self) -> None:
        self.portal.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def call(self, fn: Callable[[StreamManager], Awaitable[T]]) -> T:
        return self.portal.run(fn)

    def expect(
        self, error: type[MmstreamError], fn: Callable[[StreamManager], Awaitable[Any]]
    ) -> MmstreamError:
        with pytest.raises(error) as info:
            self.call(fn)
        return info.value

    @rule(sid=IDS, content_type=st.sampled_from(["audio/ogg", "audio/mpeg"]))
    def create(self, sid: str, content_type: str) -> None:
        if sid in self.model:
            self.expect(StreamExistsError, lambda m: m.create(sid))
            return
        info = self.call(lambda m: m.create(sid, content_type=content_type))
        assert (info.size, info.status, info.content_type) == (
            0,
            StreamStatus.UPLOADING,
            content_type,
        )
        self.model[sid] = Model()

    @rule(
        sid=IDS,
        data=st.binary(max_size=300),
        offset_kind=st.sampled_from(["none", "right", "wrong"]),
        delta=st.integers(1, 1000),
    )
    def append(self, sid: str, data: bytes, offset_kind: str, delta: int) -> None:
        model = self.model.get(sid)
        size = len(model.data) if model else 0
        expected = {"none": None, "right": size, "wrong": size + delta}[offset_kind]
        if offset_kind == "wrong" and delta % 2 and size:
            expected = max(0, size - delta)  # behind the end, like a client replaying
        operation = lambda m: m.append(sid, data, expected_offset=expected)  # noqa: E731
        if model is None:
            self.expect(StreamNotFoundError, operation)
        elif model.status is not StreamStatus.UPLOADING:
            self.expect(NotUploadingError, operation)
        elif expected is not None and expected != size:
            error = self.expect(OffsetConflictError, operation)
            assert isinstance(error, OffsetConflictError) and error.actual == size
        else:
            assert self.call(operation) == size + len(data)
            model.data += data

    @rule(sid=IDS, offset=st.integers(0, 1500), length=st.integers(0, 1500))
    def read(self, sid: str, offset: int, length: int) -> None:
        model = self.model.get(sid)
        operation = lambda m: m.read(sid, offset, length)  # noqa: E731
        if model is None:
            self.expect(StreamNotFoundError, operation)
        elif offset > len(model.data):
            self.expect(OutOfRangeError, operation)
        else:
            assert self.call(operation) == bytes(model.data[offset : offset + length])

    @rule(sid=IDS, right_sha=st.booleans(), give_size=st.booleans())
    def finalize(self, sid: str, right_sha: bool, give_size: bool) -> None:
        model = self.model.get(sid)
        content = bytes(model.data) if model else b""
        digest = hashlib.sha256(content if right_sha else content + b"!").hexdigest()
        size = len(content) if give_size else None
        operation = lambda m: m.finalize(sid, expected_size=size, sha256=digest)  # noqa: E731
        if model is None:
            self.expect(StreamNotFoundError, operation)
        elif model.status is not StreamStatus.UPLOADING:
            self.expect(NotUploadingError, operation)
        elif not right_sha:
            self.expect(ChecksumMismatchError, operation)
        else:
            info = self.call(operation)
            assert (info.status, info.sha256) == (StreamStatus.READY, digest)
            model.status = StreamStatus.READY

    @rule(sid=IDS)
    def delete(self, sid: str) -> None:
        if sid not in self.model:
            self.expect(StreamNotFoundError, lambda m: m.delete(sid))
            return
        self.call(lambda m: m.delete(sid))
        del self.model[sid]

    @rule()
    def reopen(self) -> None:
        self.portal.close()
        self.portal = ManagerPortal(self.directory / "cache", self.backend)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def follow(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        model = self.model[sid]
        offset = data.draw(st.integers(0, max(0, len(model.data) - 1)))
        if len(model.data) <= offset and model.status is StreamStatus.UPLOADING:
            return  # it would wait for data nobody sends
        info = self.call(lambda m: m.wait_for_data(sid, offset))
        assert info.size == len(model.data)

    @invariant()
    def stat_and_list_match_the_model(self) -> None:
        async def snapshot(m: StreamManager) -> Any:
            return m.list()

        infos = self.call(snapshot)
        assert [i.stream_id for i in infos] == sorted(self.model)
        for info in infos:
            model = self.model[info.stream_id]
            assert (info.size, info.status) == (len(model.data), model.status)
            assert info.durable_offset == info.size  # sync_policy "always"
            if model.status is StreamStatus.READY:
                assert info.sha256 == hashlib.sha256(model.data).hexdigest()


_SETTINGS = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _test_case(backend: str) -> type:
    machine = type(f"StreamManagerMachine_{backend}", (StreamManagerMachine,), {"backend": backend})
    case: type = machine.TestCase
    case.settings = _SETTINGS  # type: ignore[attr-defined]
    return case


# One unittest-style case per built-in backend, collected by name like any test class.
for _backend in BUILTIN_BACKENDS:
    globals()[f"TestStreamManager_{_backend}"] = _test_case(_backend)
