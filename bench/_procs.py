"""Process orchestration: free ports, CPU pinning, readiness by connecting, stop by PID.

Servers and the load generator each get their own process. Where the machine has two or more
usable cores the server is pinned to one and the generator to another, so they do not share a
core's time and the generator's cost does not show up as the server's.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

HOST = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


@attrs.frozen
class Cores:
    """Which core the servers and the generator run on (``None``: not pinned)."""

    server: int | None
    generator: int | None

    @classmethod
    def detect(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            return cls(server=cpus[0], generator=cpus[1])
        return cls(server=None, generator=None)


def _child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return setup


def _http_ok(sock: socket.socket, path: str) -> bool:
    """One ``GET path`` on a connected socket: did the status line say 200?"""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    head = sock.recv(4096)
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


def proc_status(pid: int) -> dict[str, int]:
    """Memory lines of /proc/PID/status in KiB (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@attrs.define
class ServerProcess:
    """A server in its own process, on a free loopback port, stopped by its PID."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    health: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        port: int,
        *,
        cpu: int | None,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        health: str | None = None,
    ) -> ServerProcess:
        log = log_dir / f"{name}.log"
        with log.open("wb") as log_file:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup(cpu),
                env={**os.environ, **(env or {})},
            )
        server = cls(name, popen, port, log, health)
        try:
            server.wait_ready(ready_timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_ready(self, timeout: float) -> None:
        """Ready when a TCP connection to the port succeeds, or, with a ``health`` path, when
        that path answers HTTP 200 (a server may listen before it accepts work); bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}: {self.tail()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                    if self.health is None or _http_ok(sock, self.health):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"{self.name} did not accept connections within {timeout:.0f} s")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self) -> dict[str, int]:
        """Memory figures in KiB; raises if the server is gone (a dead server is a failure)."""
        status = proc_status(self.pid)
        if "VmHWM" not in status or self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} is not running: {self.tail(5)}")
        return status

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; only this PID."""
        if self.popen.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(grace)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def spawn_child(
    module: str, spec: Mapping[str, Any], *, cpu: int | None
) -> subprocess.Popen[bytes]:
    """Start ``python -m module '<spec json>'`` pinned to ``cpu``; collect it with :func:`collect`."""
    return subprocess.Popen(
        python_module(module, json.dumps(spec)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_child_setup(cpu),
    )


def collect(proc: subprocess.Popen[bytes], module: str, timeout: float) -> dict[str, Any]:
    """Wait for a child (killed by PID after ``timeout``); its stdout is one JSON object."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        where = " / ".join(line.strip() for line in lines[-4:-1] if line.startswith("  File"))
        raise RuntimeError(f"{module} failed: {lines[-1] if lines else proc.returncode} ({where})")
    result: dict[str, Any] = json.loads(out)
    return result


def run_child(
    module: str, spec: Mapping[str, Any], *, cpu: int | None, timeout: float
) -> dict[str, Any]:
    """Run ``python -m module '<spec json>'`` pinned to ``cpu``; its stdout is one JSON object."""
    return collect(spawn_child(module, spec, cpu=cpu), module, timeout)
