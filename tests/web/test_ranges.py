"""Range decisions (RFC 9110 §14) against hand-picked cases and a slice model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmstream.web.ranges import (
    MAX_RANGE_HEADER,
    Full,
    IntRange,
    Live,
    Partial,
    SuffixRange,
    Unsatisfiable,
    evaluate_range,
    parse_range_header,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", [IntRange(0, 99)]),
        ("bytes=0-1", [IntRange(0, 1)]),
        ("bytes=100-", [IntRange(100)]),
        ("bytes=-500", [SuffixRange(500)]),
        ("BYTES=5-5", [IntRange(5, 5)]),
        ("bytes=0-0, -1", [IntRange(0, 0), SuffixRange(1)]),
        ("bytes= 1-2 ,,3-4", [IntRange(1, 2), IntRange(3, 4)]),
        ("bytes=007-010", [IntRange(7, 10)]),
        ("seconds=1-2", None),
        ("items=0-", None),
    ],
)
def test_parse(header: str, expected: list[object] | None) -> None:
    assert parse_range_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes=-",
        "bytes=5-1",
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=-1-2",
        "bytes=1 - 2",
        "bytes=0x10-20",
        "=0-1",
        "by tes=0-1",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits: \d would accept them
    ],
)
def test_parse_rejects(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range_header(header)


def test_no_range_is_the_whole_body() -> None:
    assert evaluate_range(None, 1000) == Full(1000)


def test_curl_first_hundred_bytes() -> None:
    decision = evaluate_range("bytes=0-99", 1000)
    assert decision == Partial(0, 100, 1000)
    assert isinstance(decision, Partial)
    assert decision.length == 100
    assert decision.content_range == "bytes 0-99/1000"


def test_safari_probe() -> None:
    decision = evaluate_range("bytes=0-1", 44_100)
    assert isinstance(decision, Partial)
    assert (decision.start, decision.stop, decision.content_range) == (0, 2, "bytes 0-1/44100")


def test_safari_probe_on_a_one_byte_stream() -> None:
    assert evaluate_range("bytes=0-1", 1) == Partial(0, 1, 1)


def test_suffix_and_open_ranges() -> None:
    assert evaluate_range("bytes=-500", 1000) == Partial(500, 1000, 1000)
    assert evaluate_range("bytes=-5000", 1000) == Partial(0, 1000, 1000)
    assert evaluate_range("bytes=100-", 1000) == Partial(100, 1000, 1000)
    assert evaluate_range("bytes=990-5000", 1000) == Partial(990, 1000, 1000)


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-1001", "bytes=-0", "bytes=5-1"])
def test_unsatisfiable(header: str) -> None:
    decision = evaluate_range(header, 1000)
    assert decision == Unsatisfiable(1000)
    assert isinstance(decision, Unsatisfiable)
    assert decision.content_range == "bytes */1000"


def test_empty_stream_satisfies_no_range() -> None:
    assert evaluate_range("bytes=0-", 0) == Unsatisfiable(0)
    assert evaluate_range("bytes=-1", 0) == Unsatisfiable(0)
    assert evaluate_range(None, 0) == Full(0)


def test_other_units_and_several_ranges_get_the_whole_body() -> None:
    assert evaluate_range("seconds=0-1", 1000) == Full(1000)
    assert evaluate_range("bytes=0-1,5-9", 1000) == Full(1000)
    assert evaluate_range("bytes=0-1,5000-", 1000) == Full(1000)


def test_huge_header_is_ignored() -> None:
    header = "bytes=" + ",".join(["0-0"] * (MAX_RANGE_HEADER // 3))
    assert evaluate_range(header, 1000) == Full(1000)


def test_huge_positions_do_not_overflow() -> None:
    assert evaluate_range("bytes=0-" + "9" * 40, 10) == Partial(0, 10, 10)
    assert evaluate_range("bytes=" + "9" * 40 + "-", 10) == Unsatisfiable(10)
    assert evaluate_range("bytes=-" + "9" * 40, 10) == Partial(0, 10, 10)


def test_if_range() -> None:
    etag, date = '"abc"', "Sat, 28 Nov 2026 23:59:00 GMT"
    kwargs = {"etag": etag, "last_modified": date}
    assert evaluate_range("bytes=0-9", 100, if_range='"abc"', **kwargs) == Partial(0, 10, 100)
    assert evaluate_range("bytes=0-9", 100, if_range=date, **kwargs) == Partial(0, 10, 100)
    assert evaluate_range("bytes=0-9", 100, if_range='"old"', **kwargs) == Full(100)
    assert evaluate_range("bytes=0-9", 100, if_range='W/"abc"', **kwargs) == Full(100)
    assert evaluate_range("bytes=0-9", 100, if_range="yesterday", **kwargs) == Full(100)
    assert evaluate_range("bytes=0-9", 100, if_range='"abc"') == Full(100)


def test_growing_stream() -> None:
    assert evaluate_range(None, 500, growing=True) == Live()
    assert evaluate_range("bytes=0-", 500, growing=True) == Live()
    assert evaluate_range("bytes=0-", 0, growing=True) == Live()
    part = evaluate_range("bytes=100-", 500, growing=True)
    assert part == Partial(100, 500, None)
    assert isinstance(part, Partial)
    assert part.content_range == "bytes 100-499/*"
    assert evaluate_range("bytes=0-1", 500, growing=True) == Partial(0, 2, None)
    assert evaluate_range("bytes=-100", 500, growing=True) == Partial(400, 500, None)
    past = evaluate_range("bytes=500-", 500, growing=True)
    assert past == Unsatisfiable(None)
    assert isinstance(past, Unsatisfiable)
    assert past.content_range is None
    assert evaluate_range("bytes=x", 500, growing=True) == Unsatisfiable(None)


def test_negative_size_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        evaluate_range(None, -1)


def test_partial_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Partial(5, 5, 10)
    with pytest.raises(ValueError):
        Partial(0, 11, 10)


# -- the slice model: a satisfiable range selects exactly what Python's slicing selects.

_specs = st.one_of(
    st.builds(lambda a, b: f"{a}-{a + b}", st.integers(0, 300), st.integers(0, 300)),
    st.builds(lambda a: f"{a}-", st.integers(0, 300)),
    st.builds(lambda n: f"-{n}", st.integers(0, 300)),
)


def _model(spec: str, data: bytes) -> bytes:
    first, _, last = spec.partition("-")
    if not first:
        n = int(last)
        return data[max(len(data) - n, 0) :] if n else b""
    return data[int(first) : int(last) + 1] if last else data[int(first) :]


@given(spec=_specs, size=st.integers(0, 300), growing=st.booleans())
def test_matches_the_slice_model(spec: str, size: int, growing: bool) -> None:
    data = bytes(i % 251 for i in range(size))
    expected = _model(spec, data)
    decision = evaluate_range(f"bytes={spec}", size, growing=growing)
    match decision:
        case Partial(start=start, stop=stop, complete_length=total):
            assert data[start:stop] == expected
            assert stop - start == len(expected) > 0
            assert total == (None if growing else size)
        case Unsatisfiable(complete_length=total):
            assert expected == b""
            assert total == (None if growing else size)
        case Live(start=start):
            assert growing and spec == "0-" and start == 0
        case Full():
            pytest.fail(f"a single bytes range was ignored: {spec}")
