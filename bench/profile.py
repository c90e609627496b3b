"""Where a server's time goes: sample it with py-spy while the generator loads it.

``py-spy record --format raw`` writes one line per distinct stack (``frame;frame;... count``).
Self time is the innermost frame of each sample; total time counts a function once per sample
in which it appears anywhere. Idle samples (the event loop waiting in epoll) are not recorded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import attrs

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@attrs.frozen
class Cost:
    function: str
    self_pct: float
    total_pct: float


def py_spy() -> str | None:
    """py-spy next to this interpreter (the venv's, installed by the ``bench`` extra) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, *, rate: int = 250) -> Path:
    """Sample ``pid`` for ``seconds`` without pausing it; raw collapsed stacks go to ``out``."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    return out


def _name(frame: str) -> str:
    """``func (path/to/mod.py:12)`` → ``func (mod.py)``: lines vary, functions are what count."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match.group("file").rsplit("/", 2)
    short = "/".join(file[-2:]) if len(file) > 1 else file[0]
    return f"{match.group('func')} ({short})"


def top_costs(raw: str, n: int = 15) -> tuple[int, list[Cost]]:
    """(samples, the ``n`` functions with the most self time, with their total time)."""
    self_count: Counter[str] = Counter()
    total_count: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";")]
        samples += count
        self_count[frames[-1]] += count
        for name in set(frames):
            total_count[name] += count
    if not samples:
        return 0, []
    costs = [Cost(name, 100 * c / samples, 100 * total_count[name] / samples)
             for name, c in self_count.most_common(n)]  # fmt: skip
    return samples, costs
