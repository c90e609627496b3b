"""What ``bench/hop_probe``'s log says: for the owner's and the relay's side, each event's lag
(ms since the source sent the record) at p50/p90/p99, over each process's last 8.5 s (the
measurement window; the connection burst before it apart).

    python bench/hop_probe/summary.py HOPS.jsonl
"""

from __future__ import annotations

import collections
import json
import sys


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(path: str, window: float = 8.5) -> None:
    with open(path) as lines:
        rows = [json.loads(line) for line in lines]
    last: dict[int, float] = collections.defaultdict(float)
    for row in rows:
        last[row["pid"]] = max(last[row["pid"]], row["t"])
    lags: dict[tuple[bool, str], list[float]] = collections.defaultdict(list)
    for row in rows:
        if row["t"] > last[row["pid"]] - window:
            lags[row["relay"], row["k"]].extend(row["lags"])
    for (relay, kind), values in sorted(lags.items()):
        print(
            f"{'relay' if relay else 'owner'} {kind:5} n={len(values)}"
            f" p50={percentile(values, 0.5):.1f} p90={percentile(values, 0.9):.1f}"
            f" p99={percentile(values, 0.99):.1f} ms"
        )


if __name__ == "__main__":
    main(sys.argv[1])
