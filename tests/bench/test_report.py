"""The bench's report: only target lines are judged (PASS/MISS); an ``info`` line shows a
figure and never says PASS or MISS, whether it would have passed or not."""

from __future__ import annotations

import math
from typing import Any

from bench import report


def _run(server: str, chunk: int, mb_s: float) -> dict[str, Any]:
    runs = [{"mb_s": mb_s, "msg_s": mb_s * 1e6 / chunk, "gen_cpu": 0.3, "srv_cpu": 1.0}]
    return {"server": server, "chunk": chunk, "streams": 1, "runs": runs}


def _results() -> dict[str, Any]:
    ingest = [
        _run(server, chunk, rate)
        for server, rate in (("websockets", 1000.0), ("mmstream websockets/mmap", 500.0),
                             ("trio-websocket default", 100.0))
        for chunk in (4096, 65536)
    ]  # fmt: skip
    # Storage rows: one info ratio far above its bound, one far below.
    storage = [
        {"op": "write", "impl": "memcpy", "chunk": 4096, "gib_s": [10.0]},
        {"op": "write", "impl": "backend mmap, write, paced", "chunk": 4096, "gib_s": [9.0]},
        {"op": "write", "impl": "backend mmap, write_batch, paced", "chunk": 4096, "gib_s": [1.0]},
    ]
    return {
        "ingest": ingest,
        "mmstream_servers": [
            {"name": "mmstream websockets/mmap", "transport": "websockets", "backend": "mmap"}
        ],
        "storage": storage,
        "clips": {"conns": 16, "runs": [{
            "ws_seq": {"p50_ms": 2.0, "p99_ms": 3.0, "clips_s": 400.0, "srv_cpu": 0.1, "gen_cpu": 0.1},
            "put_seq": {"p50_ms": 2.0, "p99_ms": 3.0, "clips_s": 400.0, "srv_cpu": 0.1, "gen_cpu": 0.1},
            "ws_conc": {"p50_ms": 2.0, "p99_ms": 3.0, "clips_s": 900.0, "srv_cpu": 0.1, "gen_cpu": 0.1},
            "put_conc": {"p50_ms": 2.0, "p99_ms": 3.0, "clips_s": 800.0, "srv_cpu": 0.1, "gen_cpu": 0.1},
            "disk_seq": {"p50_ms": 2.0, "p99_ms": 3.0, "files_s": 300.0, "srv_cpu": 0.1, "gen_cpu": 0.1},
            "disk_conc": {"p50_ms": 2.0, "p99_ms": 3.0, "files_s": 900.0, "srv_cpu": 0.1, "gen_cpu": 0.1},
        }], "size": 16384, "server": "mmstream websockets/mmap"},
    }  # fmt: skip


def test_info_lines_never_say_pass_or_miss_and_target_lines_do() -> None:
    targets = report.targets(_results())
    info = [t for t in targets if t.info]
    judged = [t for t in targets if not t.info]
    # Both kinds of info figure are there: one above its bound, one below it.
    assert any(t.measured >= t.bound for t in info if not math.isnan(t.bound))
    assert any(t.measured < t.bound for t in info if not math.isnan(t.bound))
    for target in info:
        line = target.line()
        assert line.startswith("info  "), line
        assert "PASS" not in line and "MISS" not in line, line
        assert target.as_json()["verdict"] == "info"
    assert {"PASS", "MISS"} <= {t.line()[:4] for t in judged}
    rendered = report.render(_results())
    for line in rendered.splitlines():
        if "info" in line and ("PASS" in line or "MISS" in line):
            raise AssertionError(f"an info line is judged: {line}")
