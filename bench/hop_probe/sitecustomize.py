"""Where a record's lag comes from on its way through the workers: put this directory first on
``PYTHONPATH``.

    HOP_PROBE=/tmp/hops.jsonl PYTHONPATH=bench/hop_probe:. python bench/fanout.py \\
        --servers mmstream --worker-cpu 0.3 --runs 2:3600 --duration 8
    python bench/hop_probe/summary.py /tmp/hops.jsonl

In an ``mmstream serve`` process, each of ``bench/fanout.py``'s records (its send time is in
it, on the machine's monotonic clock) is timed where it reaches a broadcaster with listeners
(``in``: the owner's from its cache, a relay's from its tail), where a relay's client reads
it off the owner's connection (``recv``), and where a paced round's slice writes it to
listeners (``write``, once per 50 listeners written). One JSON line per event, in
``HOP_PROBE``; ``relay`` says which worker's.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from typing import Any

if "serve" in sys.argv and os.environ.get("HOP_PROBE"):
    from mmstream import client as _client
    from mmstream.server import _fanout

    _out = open(os.environ["HOP_PROBE"], "a", buffering=1)  # noqa: SIM115 (the process's)
    _REC = struct.Struct("<4sQQ")  # bench/fanout.py's record head: magic, seq, send time
    _MAGIC = b"MMBK"

    def _lags(data: bytes | bytearray | memoryview) -> list[float]:
        """ms since each record whose head is in ``data`` was sent."""
        buf, now, lags = bytes(data), time.clock_gettime_ns(time.CLOCK_MONOTONIC), []
        at = buf.find(_MAGIC)
        while 0 <= at <= len(buf) - _REC.size:
            lags.append((now - _REC.unpack_from(buf, at)[2]) / 1e6)
            at = buf.find(_MAGIC, at + 4)
        return lags

    def _line(relay: bool, kind: str, lags: list[float]) -> None:
        if lags:
            line = {"t": time.monotonic(), "pid": os.getpid(), "relay": relay, "k": kind}
            _out.write(json.dumps({**line, "lags": lags}) + "\n")

    _take = _fanout.Broadcaster._take_piece

    def _take_piece(self: _fanout.Broadcaster, data: bytes, caught_up: bool) -> None:
        if len(self.listeners) > 100:
            _line(self.source is not None, "in", _lags(data))
        _take(self, data, caught_up)

    _round = _fanout.Broadcaster._round

    def _round_timed(self: _fanout.Broadcaster, listeners: list[_fanout.Listener]) -> None:
        if len(listeners) >= 50 and not listeners[0].immediate:
            at = max(0, min(listener.position for listener in listeners) - self.base - 3)
            lags = _lags(memoryview(self.window)[at:])
            _line(self.source is not None, "write", lags * (len(listeners) // 50))
        _round(self, listeners)

    _binary = _client.Client._on_binary

    async def _on_binary(self: _client.Client, data: bytes) -> Any:
        _line(True, "recv", _lags(data))
        return await _binary(self, data)

    _fanout.Broadcaster._take_piece = _take_piece  # type: ignore[method-assign]
    _fanout.Broadcaster._round = _round_timed  # type: ignore[method-assign]
    _client.Client._on_binary = _on_binary  # type: ignore[method-assign]
