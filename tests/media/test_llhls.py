"""Low-Latency HLS while live: parts, blocking playlist reload, preload hints (RFC 8216bis).
The rules without I/O first, then the manager's real plans and the real server's answers."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import httpx
import pytest
import trio
from hls_rules import check_playlist
from media_files import media, needs_tools

from mmstream.config import CacheConfig, Config, ServerConfig, config_from_dict
from mmstream.errors import InvalidArgumentError
from mmstream.server import RunningServer, serve
from mmstream.streams import StreamManager, open_stream_manager
from mmstream.web.hls import LowLatency, media_playlist, plan_media
from mmstream.web.hls_http import SegmentPlans, playlist_response, segment_response
from mmstream.web.llhls import (
    PART_TARGET,
    BlockingBudget,
    Directive,
    Readiness,
    advance_part_limit,
    low_latency_parts,
    parse_directives,
    parts_per_segment,
    readiness,
)

# -- the rules, without I/O ------------------------------------------------------------


def _bounds(count: int, step: float = 0.4, size: int = 1000) -> list[tuple[float, int, float]]:
    return [(k * step, k * size, 100.0 + k * step) for k in range(count)]


def test_parts_cut_a_segment_exactly_and_the_last_one_is_hinted() -> None:
    # 4 s segments of 10 parts; 23 boundaries: segments 0 and 1 whole, 2 parts of segment 2.
    plan = plan_media(_bounds(23), per_segment=10, end_time=8.9, end_offset=22_500, complete=False)
    assert [s.sequence for s in plan.segments] == [0, 1]
    for segment in plan.segments:
        parts = plan.parts_of(segment.sequence)
        assert len(parts) == 10 and [p.index for p in parts] == list(range(10))
        assert (parts[0].start, parts[-1].stop) == (segment.start, segment.stop)
        assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
        assert sum(p.duration for p in parts) == pytest.approx(segment.duration)
    assert [p.position for p in plan.parts_of(2)] == [(2, 0), (2, 1)]
    assert plan.next_part == (2, 2) and plan.last_part == (2, 1)
    assert plan.part(2, 2) is None and plan.part(1, 9) is not None
    # Finished: the part being written runs to the end; every part and segment is kept.
    done = plan_media(_bounds(23), per_segment=10, end_time=8.9, end_offset=22_500, complete=True)
    assert [s.sequence for s in done.segments] == [0, 1, 2]
    assert done.next_part is None and done.part(2, 2) is not None
    assert done.segments[:2] == plan.segments and done.part(1, 3) == plan.part(1, 3)


def test_a_segment_just_completed_hints_the_next_ones_first_part() -> None:
    plan = plan_media(_bounds(21), per_segment=10, end_time=8.0, end_offset=20_000, complete=False)
    assert [s.sequence for s in plan.segments] == [0, 1]
    assert plan.next_part == (2, 0) and plan.last_part == (1, 9)


def test_a_live_playlist_keeps_the_rfc_rules() -> None:
    plan = plan_media(_bounds(53), per_segment=10, end_time=21.0, end_offset=52_100, complete=False)
    low = LowLatency(plan.recent_parts(3), part_target=0.5, part_hold_back=1.5,
                     uri=lambda p: f"{p.sequence}.{p.index}.aac", hint="5.2.aac")  # fmt: skip
    text = media_playlist(
        plan.segments, target_duration=4, ended=False, uri=lambda s: f"{s.sequence}.aac",
        low_latency=low,
    )  # fmt: skip
    found = check_playlist(text)
    assert sorted(found.segments) == [0, 1, 2, 3, 4]
    # Parts of the last three whole segments and of the one being written, then the hint.
    assert min(found.parts) == (2, 0) and found.last_part == (5, 1)
    assert found.hint == "5.2.aac" and text.splitlines()[-1].startswith("#EXT-X-PRELOAD-HINT")
    assert found.part_target == 0.5
    # Finished: no parts, no server control, ENDLIST.
    ended = media_playlist(plan.segments, target_duration=4, ended=True, uri=str)
    assert "#EXT-X-PART" not in ended and check_playlist(ended).ended


def test_boundaries_further_apart_than_a_part_give_a_plain_live_playlist() -> None:
    # Pages of 1 s (an Ogg muxer's default) where parts are cut every 0.4 s: each boundary
    # at 0.4 k is the page before it, so parts are empty or a page long, over the target.
    pages = [(float(int(k * 0.4)), int(k * 0.4) * 1000, 100.0) for k in range(23)]
    plan = plan_media(pages, per_segment=10, end_time=9.0, end_offset=9_500, complete=False)
    assert max(p.duration for p in plan.parts_of(0)) == 1.0
    assert low_latency_parts(plan, PART_TARGET) is None
    fine = plan_media(_bounds(23), per_segment=10, end_time=9.0, end_offset=22_500, complete=False)
    assert low_latency_parts(fine, PART_TARGET) == fine.recent_parts(3)
    done = plan_media(_bounds(23), per_segment=10, end_time=9.0, end_offset=22_500, complete=True)
    assert low_latency_parts(done, PART_TARGET) is None


def test_parts_are_within_the_part_target_whatever_the_frame() -> None:
    per = parts_per_segment(4.0, PART_TARGET)
    assert per == 10
    # A part ends on the frame nearest before its nominal end: up to a frame longer.
    assert 4.0 / per + 0.09 <= PART_TARGET
    assert advance_part_limit(0.5) == 6 and advance_part_limit(2.0) == 3
    with pytest.raises(ValueError, match="part target"):
        parts_per_segment(4.0, 5.0)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("_HLS_msn=-1", "non-negative integer"),
        ("_HLS_msn=abc", "non-negative integer"),
        ("_HLS_msn=", "non-negative integer"),
        ("_HLS_msn=99999999999999999999999", "out of range"),
        ("_HLS_msn=\uff11", "non-negative integer"),  # a fullwidth digit
        ("_HLS_part=1", "needs _HLS_msn"),
        ("_HLS_msn=1&_HLS_part=x", "_HLS_part must be"),
        ("_HLS_msn=1&_HLS_msn=2", "twice"),
        ("&".join(f"a{i}=1" for i in range(40)), "query not understood"),
    ],
)
def test_hostile_directives_are_bad_requests(query: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=reason) as caught:
        parse_directives(query)
    assert "\n" not in str(caught.value)


def test_directives_parse() -> None:
    assert parse_directives("") is None
    assert parse_directives("_HLS_skip=YES&other=1") is None
    assert parse_directives("_HLS_msn=7") == Directive(7)
    assert parse_directives("_HLS_part=3&_HLS_msn=7") == Directive(7, 3)


def test_readiness_follows_6_2_5_2() -> None:
    live = plan_media(_bounds(23), per_segment=10, end_time=9.0, end_offset=22_500, complete=False)
    # Listed: segments 0-1, parts (2, 0) and (2, 1); being written: (2, 2).

    def state(msn: int, part: int | None = None) -> Readiness:
        return readiness(live, Directive(msn, part), 10, 6)

    assert state(1) is Readiness.NOW and state(2, 1) is Readiness.NOW
    assert state(1, 12) is Readiness.NOW  # "or later": (2, 0) is later
    assert state(2) is Readiness.WAIT and state(2, 2) is Readiness.WAIT
    assert state(3) is Readiness.WAIT and state(2, 7) is Readiness.WAIT
    assert state(4) is Readiness.TOO_FAR  # more than two segments past the last listed
    assert state(2, 8) is Readiness.TOO_FAR  # more than 6 parts past the last listed
    done = plan_media(_bounds(23), per_segment=10, end_time=9.0, end_offset=22_500, complete=True)
    assert readiness(done, Directive(99, 0), 10, 6) is Readiness.NOW


def test_the_blocking_budget_bounds_all_and_each_client() -> None:
    budget = BlockingBudget(limit=3, per_client=2)
    with budget.hold("a") as one, budget.hold("a") as two, budget.hold("a") as three:
        assert (one, two, three) == (True, True, False)
        with budget.hold("b") as four, budget.hold("c") as five:
            assert (four, five) == (True, False)
        assert budget.held == 2
    assert budget.held == 0 and budget.held_by("a") == 0


# -- the manager's real plans ----------------------------------------------------------


@needs_tools
@pytest.mark.parametrize("kind", ["mp3", "aac"])
async def test_real_parts_are_within_the_part_target(tmp_path: Path, kind: str) -> None:
    data = media(kind)
    async with open_stream_manager(CacheConfig(directory=tmp_path / "c")) as manager:
        await manager.create("s", content_type="application/octet-stream")
        plans = SegmentPlans()
        for piece in range(0, len(data), 7000):  # grown as a live upload would
            await manager.append("s", data[piece : piece + 7000])
            plan = await plans.get(manager, manager.stat("s"), 4.0)
        fresh = await SegmentPlans().get(manager, manager.stat("s"), 4.0)
        assert fresh.segments == plan.segments and fresh.next_part == plan.next_part
        parts = [p for s in plan.segments for p in plan.parts_of(s.sequence)]
        assert parts and max(p.duration for p in parts) <= PART_TARGET
        assert parts == [p for s in fresh.segments for p in fresh.parts_of(s.sequence)]


# -- the real server ---------------------------------------------------------------------


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(cache=CacheConfig(directory=tmp_path / "cache"), server=ServerConfig(port=0))
    running: RunningServer = await nursery.start(serve, config)
    return running


def _frames(data: bytes, seconds: float) -> int:
    """How many bytes of the 12 s ``data`` play ``seconds`` (roughly: constant bit rate)."""
    return int(len(data) * seconds / 12)


@needs_tools
async def test_a_blocking_reload_answers_when_its_part_arrives(server: RunningServer) -> None:
    data = media("aac")
    base = f"http://127.0.0.1:{server.port}/streams/live"
    manager = server.manager
    await manager.create("live", content_type="audio/aac")
    await manager.append("live", data[: _frames(data, 5.0)])
    async with httpx.AsyncClient(timeout=20) as http:
        first = check_playlist((await http.get(f"{base}/index.m3u8")).text)
        assert sorted(first.segments) == [0] and first.hint is not None
        assert first.last_part is not None
        msn, part = first.last_part[0], first.last_part[1] + 1
        answered: list[tuple[float, httpx.Response]] = []

        async def reload() -> None:
            answer = await http.get(f"{base}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
            answered.append((time.monotonic(), answer))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reload)
            await trio.sleep(0.5)
            assert not answered  # held: the part is not final yet
            sent = time.monotonic()
            await manager.append("live", data[_frames(data, 5.0) : _frames(data, 6.0)])
        at, answer = answered[0]
        assert answer.status_code == 200 and at - sent < 1.0
        assert answer.headers["cache-control"] == "public, max-age=12"
        found = check_playlist(answer.text)
        assert found.last_part is not None and found.last_part >= (msn, part)
        # A request for a whole segment: answered once it is listed.
        assert (await http.get(f"{base}/index.m3u8?_HLS_msn=0")).status_code == 200
        # Too far ahead: 400 at once, one line.
        for query in (f"_HLS_msn={msn + 3}", f"_HLS_msn={msn}&_HLS_part={part + 12}"):
            far = await http.get(f"{base}/index.m3u8?{query}")
            assert far.status_code == 400 and far.text.count("\n") == 1, far.text
        for query in ("_HLS_msn=-1", "_HLS_msn=1e9", "_HLS_part=2", "_HLS_msn=" + "9" * 40):
            bad = await http.get(f"{base}/index.m3u8?{query}")
            assert bad.status_code == 400 and bad.text.startswith("bad-request: "), query
        # Finished: answered at once whatever is asked, without parts.
        await manager.append("live", data[_frames(data, 6.0) :])
        await manager.finalize("live")
        ended = await http.get(f"{base}/index.m3u8?_HLS_msn=2&_HLS_part=0")
        assert check_playlist(ended.text).ended and ended.headers["cache-control"] == "max-age=60"


@needs_tools
async def test_the_hinted_part_is_held_until_final_then_immutable(server: RunningServer) -> None:
    data = media("mp3")
    base = f"http://127.0.0.1:{server.port}/streams/live"
    manager = server.manager
    info = await manager.create("live", content_type="audio/mpeg")
    await manager.append("live", data[: _frames(data, 2.0)])
    async with httpx.AsyncClient(timeout=20) as http:
        first = check_playlist((await http.get(f"{base}/index.m3u8")).text)
        assert first.hint is not None and first.hint.startswith(f"hls/{info.generation}-0.")
        got: list[httpx.Response] = []

        async def fetch_hint() -> None:
            assert first.hint is not None
            got.append(await http.get(f"{base}/{first.hint}"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch_hint)
            await trio.sleep(0.5)
            assert not got
            await manager.append("live", data[_frames(data, 2.0) : _frames(data, 3.0)])
        part = got[0]
        assert part.status_code == 200 and part.content.startswith(b"ID3\x04")
        assert part.headers["cache-control"] == "public, max-age=31536000, immutable"
        etag = part.headers["etag"]
        assert (
            await http.get(f"{base}/{first.hint}", headers={"if-none-match": etag})
        ).status_code == 304
        # A part two ahead of the hint is not held: 404 at once.
        sequence, index = first.hint.split("-")[1].split(".")[:2]
        ahead = f"hls/{info.generation}-{int(sequence) + 1}.{int(index)}.mp3"
        assert (await http.get(f"{base}/{ahead}")).status_code == 404
        await manager.append("live", data[_frames(data, 3.0) :])
        await manager.finalize("live")
        # Finished: the same part, the same bytes and tag; a segment is its parts' frames.
        again = await http.get(f"{base}/{first.hint}")
        assert (again.content, again.headers["etag"]) == (part.content, etag)
        vod = check_playlist((await http.get(f"{base}/index.m3u8")).text)
        segment = (await http.get(f"{base}/{vod.segments[0]}")).content
        pieces = [(await http.get(f"{base}/hls/{info.generation}-0.{k}.mp3")) for k in range(10)]
        assert all(p.status_code == 200 for p in pieces)
        frames = b"".join(p.content[p.content.index(b"\xff") :] for p in pieces)
        assert segment.endswith(frames)


async def _blocked_playlist(manager: StreamManager, budget: BlockingBudget, query: str) -> int:
    response = await playlist_response(
        manager, "s", query=query, client="10.0.0.1", target=1.0, budget=budget
    )
    return response.status


@needs_tools
async def test_a_held_reload_times_out_and_the_budget_refuses_with_503(tmp_path: Path) -> None:
    data = media("aac")
    async with open_stream_manager(CacheConfig(directory=tmp_path / "c")) as manager:
        await manager.create("s", content_type="audio/aac")
        await manager.append("s", data[: _frames(data, 2.2)])
        budget = BlockingBudget(limit=4, per_client=1)
        statuses: list[int] = []
        async with trio.open_nursery() as nursery:
            started = trio.current_time()
            nursery.start_soon(lambda: _record(statuses, manager, budget, "_HLS_msn=3"))
            await trio.sleep(0.2)
            assert budget.held == 1
            # The same client again: over its share, refused at once.
            assert await _blocked_playlist(manager, budget, "_HLS_msn=3") == 503
        # No data came: 503 after three target durations (1 s targets here).
        assert statuses == [503] and 2.9 < trio.current_time() - started < 5
        assert budget.held == 0


async def _record(out: list[int], manager: StreamManager, budget: BlockingBudget, q: str) -> None:
    out.append(await _blocked_playlist(manager, budget, q))


@needs_tools
async def test_health_checks_are_answered_while_reloads_are_held(server: RunningServer) -> None:
    data = media("aac")
    await server.manager.create("live", content_type="audio/aac")
    await server.manager.append("live", data[: _frames(data, 5.0)])
    base = f"http://127.0.0.1:{server.port}"
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=20, limits=limits) as http:
        found = check_playlist((await http.get(f"{base}/streams/live/index.m3u8")).text)
        assert found.last_part is not None
        msn, part = found.last_part[0], found.last_part[1] + 1
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(
                    http.get, f"{base}/streams/live/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
                )
            await trio.sleep(0.5)
            async with httpx.AsyncClient(timeout=5) as other:
                assert (await other.get(f"{base}/healthz")).status_code == 200
            await server.manager.append("live", data[_frames(data, 5.0) :])


async def test_segment_response_needs_a_valid_name(tmp_path: Path) -> None:
    async with open_stream_manager(CacheConfig(directory=tmp_path / "c")) as manager:
        answer = await segment_response(manager, "s", "0123456789abcdef-1.2.3.mp3", {})
        assert answer.status == 404


@needs_tools
async def test_plans_kept_are_bounded_by_their_boundaries(tmp_path: Path) -> None:
    data = media("mp3")  # 12 s: ~31 boundaries of 0.4 s
    async with open_stream_manager(CacheConfig(directory=tmp_path / "c")) as manager:
        for name in ("a", "b"):
            await manager.create(name, content_type="audio/mpeg")
            await manager.append(name, data)
        roomy, tight = SegmentPlans(), SegmentPlans(boundaries=40)
        for plans in (roomy, tight):
            first = await plans.get(manager, manager.stat("a"), 4.0)
            await plans.get(manager, manager.stat("b"), 4.0)
            again = await plans.get(manager, manager.stat("a"), 4.0)
            assert (again is first) == (plans is roomy)  # the tight one dropped "a" for "b"
            assert again.segments == first.segments


@needs_tools
async def test_the_configured_budget_bounds_one_address_and_all(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # [hls] max_blocked = 3, max_blocked_per_ip = 2: a client opening many blocking reloads
    # from many connections of one address has two held and the rest 503 at once; another
    # address gets what is left of the whole; /healthz is answered meanwhile.
    config = config_from_dict(
        {"cache": {"directory": str(tmp_path / "cache")},
         "server": {"host": "127.0.0.1", "port": 0},
         "hls": {"max_blocked": 3, "max_blocked_per_ip": 2}}
    )  # fmt: skip
    server: RunningServer = await nursery.start(serve, config)
    data = media("aac")
    await server.manager.create("live", content_type="audio/aac")
    await server.manager.append("live", data[: _frames(data, 5.0)])
    base = f"http://127.0.0.1:{server.port}"

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        return httpx.AsyncClient(timeout=20, transport=transport,
                                 limits=httpx.Limits(max_connections=20))  # fmt: skip

    async with client("127.0.0.1") as one, client("127.0.0.2") as two, client("127.0.0.3") as three:
        found = check_playlist((await one.get(f"{base}/streams/live/index.m3u8")).text)
        assert found.last_part is not None
        msn, part = found.last_part[0], found.last_part[1] + 1
        url = f"{base}/streams/live/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        answers: dict[str, list[httpx.Response]] = {"one": [], "two": [], "three": []}

        async def ask(name: str, http: httpx.AsyncClient) -> None:
            answers[name].append(await http.get(url))

        async with trio.open_nursery() as waiting:
            for _ in range(12):
                waiting.start_soon(ask, "one", one)
            await trio.sleep(1.0)
            # Ten of the twelve refused at once, two held.
            refused = answers["one"]
            assert len(refused) == 10 and {r.status_code for r in refused} == {503}
            assert all(r.headers["retry-after"] == "1" for r in refused)
            assert refused[0].text.count("\n") == 1, refused[0].text
            waiting.start_soon(ask, "two", two)
            await trio.sleep(0.5)
            assert not answers["two"]  # held: the third of three
            waiting.start_soon(ask, "three", three)
            await trio.sleep(0.5)
            assert [r.status_code for r in answers["three"]] == [503]  # over the whole
            assert (await three.get(f"{base}/healthz")).status_code == 200
            await server.manager.append("live", data[_frames(data, 5.0) : _frames(data, 6.0)])
        held = answers["one"][10:] + answers["two"]
        assert [r.status_code for r in held] == [200, 200, 200]
