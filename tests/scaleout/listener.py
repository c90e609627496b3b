"""A real child process for the supervisor tests: listens on a port, records the signal
that ended it. ``ignore-term`` makes it ignore SIGTERM/SIGINT (to test the kill deadline); ``needs=PORT``
makes it exit 7 at once unless PORT already accepts connections (to test start order)."""

import signal
import socket
import sys
from pathlib import Path
from types import FrameType


def main() -> None:
    port, record = int(sys.argv[1]), Path(sys.argv[2])
    for arg in sys.argv[3:]:
        if arg.startswith("needs="):  # refuse to start unless that port already listens
            try:
                socket.create_connection(("127.0.0.1", int(arg[6:])), timeout=5).close()
            except OSError:
                sys.exit(7)

    def on_signal(signum: int, _: FrameType | None) -> None:
        with record.open("a") as f:
            f.write(signal.Signals(signum).name + "\n")
        if "ignore-term" not in sys.argv:
            sys.exit(0)

    # Handlers first: the tests take "listening" to mean "ready for a signal".
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = server.accept()
        conn.close()


if __name__ == "__main__":
    main()
