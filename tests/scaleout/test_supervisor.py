"""The worker supervisor with real child processes and real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest
import trio
from scaleout_helpers import alive, free_ports

from mmstream.errors import InvalidArgumentError
from mmstream.scaleout import Endpoint, Node
from mmstream.scaleout._supervisor import (
    Child,
    RestartPolicy,
    Supervisor,
    plan_workers,
    serve_argv,
    wait_until_listening,
)

LISTENER = Path(__file__).with_name("listener.py")
FAST = RestartPolicy(initial_backoff=0.05, max_backoff=0.2, stop_timeout=5, ready_timeout=10)


def listener(name: str, port: int, record: Path, *extra: str) -> Child:
    argv = (sys.executable, str(LISTENER), str(port), str(record), *extra)
    return Child(name, argv, Endpoint("127.0.0.1", port))


def test_plan_gives_each_worker_a_port_and_a_directory(tmp_path: Path) -> None:
    workers = plan_workers(3, host="0.0.0.0", base_port=9001, cache_dir=tmp_path)
    assert [w.listen.port for w in workers] == [9001, 9002, 9003]
    assert [w.cache_dir for w in workers] == [tmp_path / f"node-{i}" for i in range(3)]
    assert workers[2].node == Node(2, Endpoint("127.0.0.1", 9003))
    ipv6 = plan_workers(1, host="::", base_port=80, cache_dir=tmp_path)
    assert ipv6[0].node.endpoint == Endpoint("::1", 80)


@pytest.mark.parametrize(("count", "port"), [(0, 9001), (257, 9001), (2, 0), (2, 65535)])
def test_plan_refuses_impossible_layouts(count: int, port: int, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        plan_workers(count, host="127.0.0.1", base_port=port, cache_dir=tmp_path)


def test_serve_argv(tmp_path: Path) -> None:
    (worker,) = plan_workers(1, host="127.0.0.1", base_port=9001, cache_dir=tmp_path)
    argv = serve_argv(worker, config=Path("conf/mmstream.toml"), log_level="INFO", python="py")
    assert argv == (
        "py", "-m", "mmstream", "serve", "--config", "conf/mmstream.toml",
        "--host", "127.0.0.1", "--port", "9001", "--cache-dir", str(tmp_path / "node-0"),
        "--log-level", "INFO",
    )  # fmt: skip


def test_children_need_distinct_names() -> None:
    with pytest.raises(InvalidArgumentError):
        Supervisor([Child("a", ("true",)), Child("a", ("true",))])
    with pytest.raises(InvalidArgumentError):
        Supervisor([])


async def test_restarts_a_crashed_child_and_forwards_stop(tmp_path: Path) -> None:
    lines: list[str] = []
    ports = [free_ports(1)[0], free_ports(1)[0]]
    records = [tmp_path / "a.txt", tmp_path / "b.txt"]
    supervisor = Supervisor(
        [listener("a", ports[0], records[0]), listener("b", ports[1], records[1])],
        FAST,
        report=lines.append,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        first_a, pid_b = supervisor.pid("a"), supervisor.pid("b")
        assert first_a is not None and pid_b is not None
        os.kill(first_a, signal.SIGKILL)
        with trio.fail_after(10):
            while supervisor.starts["a"] < 2:  # noqa: ASYNC110 (the count is the signal)
                await trio.sleep(0.02)
            await wait_until_listening(Endpoint("127.0.0.1", ports[0]))
        second_a = supervisor.pid("a")
        assert second_a not in (None, first_a)
        assert supervisor.pid("b") == pid_b and supervisor.starts["b"] == 1
        supervisor.stop(signal.SIGINT)
    assert supervisor.exit_code == 0
    assert records[0].read_text() == "SIGINT\n" and records[1].read_text() == "SIGINT\n"
    assert not alive(pid_b) and second_a is not None and not alive(second_a)
    assert any(f"a (pid {first_a}) killed by SIGKILL" in line for line in lines)
    assert any(line.startswith("restarting a in ") for line in lines)


async def test_gives_up_on_a_child_that_keeps_failing(tmp_path: Path) -> None:
    lines: list[str] = []
    policy = RestartPolicy(
        initial_backoff=0.01, max_backoff=0.02, max_quick_failures=3, stop_timeout=5
    )
    failing = Child("bad", (sys.executable, "-c", "raise SystemExit(3)"))
    good = listener("good", free_ports(1)[0], tmp_path / "good.txt")
    supervisor = Supervisor([failing, good], policy, report=lines.append)
    with trio.fail_after(20):
        code = await supervisor.run()
    assert code == 1
    assert supervisor.starts["bad"] == 3
    assert "bad failed 3 times in a row; stopping everything" in lines
    assert (tmp_path / "good.txt").read_text() == "SIGTERM\n"


async def test_without_restarts_a_dead_child_stays_down(tmp_path: Path) -> None:
    lines: list[str] = []
    policy = attrs.evolve(FAST, restart=False)
    a, b = (listener(n, free_ports(1)[0], tmp_path / f"{n}.txt") for n in "ab")
    supervisor = Supervisor([a, b], policy, report=lines.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        pid_a = supervisor.pid("a")
        assert pid_a is not None
        os.kill(pid_a, signal.SIGTERM)
        with trio.fail_after(10):
            while supervisor.pid("a") is not None:  # noqa: ASYNC110 (polling another process)
                await trio.sleep(0.02)
        await trio.sleep(3 * policy.initial_backoff)
        assert supervisor.starts == {"a": 1, "b": 1} and supervisor.pid("b") is not None
        supervisor.stop()
    assert supervisor.exit_code == 0
    assert "a stays down (restarts are off)" in lines


async def test_a_child_after_others_starts_once_they_listen(tmp_path: Path) -> None:
    first_port, late_port = free_ports(2)
    first = listener("first", first_port, tmp_path / "f.txt")
    late = attrs.evolve(
        listener("late", late_port, tmp_path / "l.txt", f"needs={first_port}"), after_others=True
    )
    supervisor = Supervisor([late, first], attrs.evolve(FAST, restart=False))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        assert supervisor.pid("late") is not None and supervisor.starts["late"] == 1
        supervisor.stop()
    assert supervisor.exit_code == 0


async def test_a_child_dead_before_ready_does_not_hold_up_the_start(tmp_path: Path) -> None:
    dead = Child("dead", (sys.executable, "-c", "raise SystemExit(3)"), Endpoint("127.0.0.1", 1))
    supervisor = Supervisor([dead], attrs.evolve(FAST, restart=False), report=lambda _: None)
    with trio.fail_after(10):
        assert await supervisor.run() == 1  # all children gone on their own


async def test_kills_a_child_that_ignores_the_signal(tmp_path: Path) -> None:
    lines: list[str] = []
    policy = RestartPolicy(stop_timeout=0.5, ready_timeout=10)
    stubborn = listener("stubborn", free_ports(1)[0], tmp_path / "s.txt", "ignore-term")
    supervisor = Supervisor([stubborn], policy, report=lines.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        pid = supervisor.pid("stubborn")
        supervisor.stop()
    assert (tmp_path / "s.txt").read_text() == "SIGTERM\n"
    assert f"stubborn (pid {pid}) still running; killing it" in lines
    assert pid is not None and not alive(pid)


async def test_an_unstartable_child_stops_everything(tmp_path: Path) -> None:
    lines: list[str] = []
    missing = Child("missing", (str(tmp_path / "no-such-program"),))
    supervisor = Supervisor([missing], FAST, report=lines.append)
    with trio.fail_after(10):
        assert await supervisor.run() == 1
    assert lines and lines[0].startswith("cannot start missing: ")


SUPERVISOR_SCRIPT = textwrap.dedent(
    """
    import sys, trio
    from mmstream.scaleout import Endpoint
    from mmstream.scaleout._supervisor import Child, Supervisor, run_supervisor
    listener, tmp, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
    children = [
        Child(f"n{i}", (sys.executable, listener, p, f"{tmp}/n{i}.txt"), Endpoint("127.0.0.1", int(p)))
        for i, p in enumerate(ports)
    ]
    supervisor = Supervisor(children)
    ready = lambda: print("ready", *(supervisor.pid(c.name) for c in children), flush=True)
    sys.exit(trio.run(lambda: run_supervisor(supervisor, on_ready=ready)))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_process_forwards_the_signal_it_receives_once(tmp_path: Path, signum: int) -> None:
    ports = [str(free_ports(1)[0]), str(free_ports(1)[0])]
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_SCRIPT, str(LISTENER), str(tmp_path), *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        words = proc.stdout.readline().split()
        assert words[:1] == ["ready"], proc.stderr.read() if proc.stderr else ""
        pids = [int(w) for w in words[1:]]
        # Children have their own process groups: a terminal's Ctrl-C reaches the
        # supervisor only, and it forwards exactly one signal.
        assert all(os.getpgid(pid) == pid for pid in pids)
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 0
        name = signal.Signals(signum).name
        for i in range(2):
            assert (tmp_path / f"n{i}.txt").read_text() == f"{name}\n"
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(alive(pid) for pid in pids)
    finally:
        proc.kill()
        proc.wait()
