"""Run N ``mmstream serve`` workers on one host (and optionally HAProxy in front of them).

One Python process drives one core, so a host runs one worker per core, each with its own
port and its own cache directory: a worker owns the streams HAProxy hashes to it and shares
nothing with the others, so the supervisor only starts, watches and stops processes.

Crash policy: a worker that exits on its own is restarted, after 0.5 s doubling to 10 s, from
the same cache directory, so its streams come back (recovered from their sidecars) — often
before HAProxy's health check (``inter 1s fall 2``) has even marked it down. Every exit is
reported on stderr. A worker that keeps failing quickly (``max_quick_failures`` starts in a
row, each shorter than ``stable_after``) is a configuration problem such as a port in use,
not bad luck: the supervisor then stops everything and exits 1 rather than loop forever.

Signals: SIGINT and SIGTERM are forwarded once to every child (children run in their own
process groups, so a terminal's Ctrl-C reaches them only through the supervisor and exactly
once); whatever is still running ``stop_timeout`` seconds later is killed. A second signal
kills at once.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import attrs
import trio

from ..errors import InvalidArgumentError
from ._haproxy import Endpoint, Node

__all__ = [
    "Child",
    "RestartPolicy",
    "Supervisor",
    "Worker",
    "plan_workers",
    "run_supervisor",
    "serve_argv",
    "wait_until_listening",
]

Report = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"mmstream: {line}", file=sys.stderr, flush=True)


@attrs.frozen
class Worker:
    """One worker's share of the host: a port and a cache directory of its own."""

    index: int
    listen: Endpoint
    cache_dir: Path

    @property
    def node(self) -> Node:
        """How a balancer on this host reaches the worker (a wildcard bind is reached on
        loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.listen.host, self.listen.host)
        return Node(self.index, Endpoint(host, self.listen.port))


def plan_workers(count: int, *, host: str, base_port: int, cache_dir: Path) -> tuple[Worker, ...]:
    """Worker ``i`` (from 0) listens on ``base_port + i`` and caches in ``cache_dir/node-i``;
    the same numbers name it in the HAProxy config, so ownership survives a restart."""
    if not 1 <= count <= 256:
        raise InvalidArgumentError(f"workers: expected 1..256, got {count}")
    if base_port < 1 or base_port + count - 1 > 65535:
        raise InvalidArgumentError(
            f"port: {count} workers need ports {base_port}..{base_port + count - 1}; "
            "give a fixed base port (not 0) low enough for all of them"
        )
    return tuple(
        Worker(i, Endpoint(host, base_port + i), cache_dir / f"node-{i}") for i in range(count)
    )


def serve_argv(
    worker: Worker,
    *,
    config: Path | None = None,
    log_level: str | None = None,
    peers: Sequence[Endpoint] = (),
    python: str = sys.executable,
) -> tuple[str, ...]:
    """The ``mmstream serve`` command line of one worker: the shared config file with this
    worker's host, port and cache directory on top, and the workers it relays from."""
    argv = [python, "-m", "mmstream", "serve"]
    if config is not None:
        argv += ["--config", str(config)]
    argv += ["--host", worker.listen.host, "--port", str(worker.listen.port)]
    argv += ["--cache-dir", str(worker.cache_dir)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    if peers:
        argv += ["--peers", ",".join(str(peer) for peer in peers)]
    return tuple(argv)


@attrs.frozen
class Child:
    """A process to keep running; ``address`` is where it listens once it is ready."""

    name: str
    argv: tuple[str, ...]
    address: Endpoint | None = None
    #: Start only once every other child is ready: HAProxy goes last, so its first health
    #: checks find the workers listening instead of marking them down for ``rise`` checks.
    after_others: bool = False


@attrs.frozen
class RestartPolicy:
    """When the supervisor restarts a worker that exited and when it gives up: with a
    growing backoff, so a worker that crashes at start does not spin, and a cap on quick
    failures, so a broken configuration is reported instead of retried forever."""

    #: Off: a child that exits is reported and left down (tests kill nodes on purpose).
    restart: bool = True
    initial_backoff: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    max_backoff: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    #: A run at least this long counts as healthy and resets the backoff.
    stable_after: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    max_quick_failures: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    #: Above the server's ``shutdown_grace`` (10 s), so a worker can close its streams.
    stop_timeout: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    #: How long a fresh process may take to accept connections before it is reported.
    ready_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))


async def wait_until_listening(address: Endpoint, *, poll: float = 0.05) -> None:
    """Return once a TCP connect to ``address`` succeeds (the process is serving); the
    caller bounds the wait with a cancel scope."""
    while True:
        try:
            stream = await trio.open_tcp_stream(address.host, address.port)
        except OSError:
            await trio.sleep(poll)
        else:
            await stream.aclose()
            return


class Supervisor:
    """Keeps ``children`` running until :meth:`stop`; see the module docstring for policy."""

    def __init__(
        self,
        children: Sequence[Child],
        policy: RestartPolicy | None = None,
        *,
        report: Report = _stderr,
    ) -> None:
        names = [c.name for c in children]
        if not children or len(set(names)) != len(names):
            raise InvalidArgumentError(f"children: need distinct names, got {names}")
        self.children = tuple(children)
        self.policy = policy or RestartPolicy()
        self._report = report
        self._processes: dict[str, trio.Process] = {}
        self._stopping = trio.Event()
        self._stop_signal = signal.SIGTERM
        #: 0 after a stop by signal; 1 after giving up on a child, or when every child
        #: exited on its own (restarts off).
        self.exit_code = 0
        self._ready: dict[str, trio.Event] = {c.name: trio.Event() for c in children}
        self._nursery: trio.Nursery | None = None
        #: Starts of each child, restarts included (for tests and reports).
        self.starts: dict[str, int] = dict.fromkeys(names, 0)

    def pid(self, name: str) -> int | None:
        process = self._processes.get(name)
        return process.pid if process is not None else None

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> int:
        """Start every child; ``task_status.started`` once all of them accept connections
        (or have no address); return when all have exited after :meth:`stop`."""
        async with trio.open_nursery() as deadlines:
            self._nursery = deadlines
            async with trio.open_nursery() as nursery:
                first = [c for c in self.children if not c.after_others]
                last = [c for c in self.children if c.after_others]
                for group in (first, last):
                    for child in group:
                        nursery.start_soon(self._keep_running, child)
                    for child in group:
                        await self._ready[child.name].wait()
                task_status.started(self)
            deadlines.cancel_scope.cancel()  # every child has exited: no one left to kill
        if not self._stopping.is_set():  # they all died on their own (restarts off)
            self.exit_code = 1
        return self.exit_code

    def stop(self, signum: int = signal.SIGTERM, *, exit_code: int = 0) -> None:
        """Forward ``signum`` to every child and stop restarting them; a second call kills."""
        if self._stopping.is_set():
            for process in list(self._processes.values()):
                process.kill()
            return
        self.exit_code = self.exit_code or exit_code
        self._stop_signal = signal.Signals(signum)
        self._stopping.set()
        for event in self._ready.values():
            event.set()
        for process in list(self._processes.values()):
            process.send_signal(signum)
        if self._nursery is not None:
            self._nursery.start_soon(self._kill_stragglers)

    async def _kill_stragglers(self) -> None:
        await trio.sleep(self.policy.stop_timeout)
        for name, process in list(self._processes.items()):
            self._report(f"{name} (pid {process.pid}) still running; killing it")
            process.kill()

    async def _keep_running(self, child: Child) -> None:
        policy = self.policy
        backoff = policy.initial_backoff
        quick_failures = 0
        while not self._stopping.is_set():
            started_at = trio.current_time()
            try:
                process = await trio.lowlevel.open_process(child.argv, process_group=0)
            except OSError as exc:
                self._report(f"cannot start {child.name}: {exc}")
                self.stop(exit_code=1)
                return
            self._processes[child.name] = process
            self.starts[child.name] += 1
            if self._stopping.is_set():  # stop() ran while this one was being spawned
                process.send_signal(self._stop_signal)
            code = await self._wait(child, process)
            del self._processes[child.name]
            if self._stopping.is_set():
                return
            ran = trio.current_time() - started_at
            self._report(
                f"{child.name} (pid {process.pid}) {_describe_exit(code)} after {ran:.1f} s"
            )
            if not policy.restart:
                self._report(f"{child.name} stays down (restarts are off)")
                self._ready[child.name].set()  # never ready: do not hold up the others
                return
            if ran >= policy.stable_after:  # a long run was healthy: start counting afresh
                backoff, quick_failures = policy.initial_backoff, 0
            else:
                quick_failures += 1
            if quick_failures >= policy.max_quick_failures:
                self._report(
                    f"{child.name} failed {quick_failures} times in a row; stopping everything"
                )
                self.stop(exit_code=1)
                return
            self._report(f"restarting {child.name} in {backoff:g} s")
            with trio.move_on_after(backoff):
                await self._stopping.wait()
            backoff = min(backoff * 2, policy.max_backoff)

    async def _wait(self, child: Child, process: trio.Process) -> int:
        """Wait for the process to exit, reporting it ready once it accepts connections.
        Never cancelled from outside: the process is ended by a signal, not abandoned."""
        async with trio.open_nursery() as nursery:
            if child.address is None:
                self._ready[child.name].set()
            else:
                nursery.start_soon(self._announce_ready, child, process.pid)
            code = await process.wait()
            nursery.cancel_scope.cancel()
        return code

    async def _announce_ready(self, child: Child, pid: int) -> None:
        assert child.address is not None
        with trio.move_on_after(self.policy.ready_timeout) as waited:
            await wait_until_listening(child.address)
        if waited.cancelled_caught:
            self._report(f"{child.name} (pid {pid}) not listening on {child.address} yet")
        else:
            self._report(f"{child.name} (pid {pid}) ready on {child.address}")
        self._ready[child.name].set()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


async def run_supervisor(
    supervisor: Supervisor, *, on_ready: Callable[[], None] | None = None
) -> int:
    """Run ``supervisor`` until SIGINT or SIGTERM, which it forwards to the children; the
    process-level entry point (only the main thread receives signals)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_forward_signals, signals, supervisor)
            async with trio.open_nursery() as children:
                await children.start(supervisor.run)
                if on_ready is not None:
                    on_ready()
            nursery.cancel_scope.cancel()
    return supervisor.exit_code


async def _forward_signals(signals: AsyncIterator[int], supervisor: Supervisor) -> None:
    async for signum in signals:
        supervisor.stop(signum)
