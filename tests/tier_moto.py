"""A real S3 endpoint for tests: moto's server mode in its own process on a free loopback
port (``moto_server -H 127.0.0.1 -p PORT``), like every other real part the tests start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs

__all__ = ["MotoServer", "free_port"]

#: Any key pair works with moto; real ones never appear in tests.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class MotoServer:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        program = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen(
            [str(program), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"moto_server exited: {self.process.returncode}") from None
                time.sleep(0.05)
            else:
                return
        raise RuntimeError("moto_server did not start listening within 30 s")

    def pause(self) -> None:
        """An outage: the endpoint stops answering (SIGSTOP) but keeps its objects."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def request(self, method: str, target: str) -> tuple[int, bytes]:
        """One unsigned request (moto accepts them): no S3 client needed in the tests."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(
                f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def create_bucket(self, name: str) -> None:
        status, body = self.request("PUT", f"/{name}")
        if status != 200:
            raise RuntimeError(f"creating bucket {name}: {status} {body[:200]!r}")

    def keys(self, bucket: str) -> list[str]:
        """Every visible object's key (one page, enough for tests)."""
        _, body = self.request("GET", f"/{bucket}?list-type=2")
        return re.findall(r"<Key>([^<]+)</Key>", body.decode())

    def uploads_in_progress(self, bucket: str) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        _, body = self.request("GET", f"/{bucket}?uploads")
        return re.findall(r"<Key>([^<]+)</Key>", body.decode())
