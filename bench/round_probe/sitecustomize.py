"""The fan-out rounds of a real server, timed: put this directory first on ``PYTHONPATH``.

    ROUND_PROBE=/tmp/rounds.jsonl PYTHONPATH=bench/round_probe:. \\
        python bench/fanout.py --servers mmstream --counts 10000 --duration 8
    python bench/round_probe/summary.py /tmp/rounds.jsonl

In an ``mmstream serve`` process (any other Python process started meanwhile is left
alone), every ``Broadcaster`` round (or slice of a round) of a stream with 1,000 listeners
or more is timed (wall, the thread's user and system CPU) and every garbage collection
too; one JSON line each, in
``ROUND_PROBE``. What ``bench/fanout_round.py`` measures on ``/dev/null``, this measures
with real sockets: the system CPU is the kernel's share (the writes, loopback's delivery).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from typing import Any

if "serve" in sys.argv and os.environ.get("ROUND_PROBE"):
    from mmstream.server import _fanout

    _out = open(os.environ["ROUND_PROBE"], "a", buffering=1)  # noqa: SIM115 (the process's)
    _timed = _fanout.Broadcaster._round

    def _line(**fields: Any) -> None:
        _out.write(json.dumps({"t": time.monotonic(), **fields}) + "\n")

    def _round(self: _fanout.Broadcaster, listeners: list[_fanout.Listener], *span: Any) -> Any:
        # ``span``: the slice of a sliced round (start, stop); none on older trees.
        if len(listeners) < 1000:
            return _timed(self, listeners, *span)
        written = len(listeners[slice(*span)]) if span else len(listeners)
        before, began = resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
        result = _timed(self, listeners, *span)
        wall, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_THREAD)
        user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
        _line(listeners=len(listeners), written=written, wall=wall, user=user, system=system)
        return result

    _fanout.Broadcaster._round = _round
    _started = [0.0]

    def _collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            _line(gc=info["generation"], seconds=time.perf_counter() - _started[0])

    gc.callbacks.append(_collected)
