"""What ``bench/round_probe``'s log says: at the full listener count, µs a listener written
(user CPU, system CPU), the wall time of a round (or of one slice of a round), and the
garbage collections, those in the steady state apart.

    python bench/round_probe/summary.py ROUNDS.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys


def main() -> None:
    rows = [json.loads(line) for line in open(sys.argv[1])]  # noqa: SIM115
    rounds = [row for row in rows if "listeners" in row]
    full = [row for row in rounds if row["listeners"] == max(r["listeners"] for r in rounds)]
    count = sum(row.get("written", row["listeners"]) for row in full)
    user = sum(row["user"] for row in full) / count * 1e6
    system = sum(row["system"] for row in full) / count * 1e6
    walls = sorted(row["wall"] * 1000 for row in full)
    print(
        f"{full[0]['listeners']} listeners, {len(full)} rounds or slices: user {user:.2f} µs a "
        f"listener, system {system:.2f} µs; wall time of one median "
        f"{statistics.median(walls):.1f} ms, max {walls[-1]:.1f} ms"
    )
    # The steady state: from 2 s after the last listener joined (bench/fanout.py's settle)
    # to the last round (a collection at shutdown is not in it).
    steady = (full[0]["t"] + 2, full[-1]["t"])
    for generation in (0, 1, 2):
        collections = [row for row in rows if row.get("gc") == generation]
        if collections:
            longest = max(row["seconds"] for row in collections) * 1000
            inside = sum(steady[0] < row["t"] < steady[1] for row in collections)
            print(
                f"gc generation {generation}: {len(collections)} collections, longest "
                f"{longest:.0f} ms, {inside} in the steady state"
            )


if __name__ == "__main__":
    main()
