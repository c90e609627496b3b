"""``bench/fanout.py --worker-cpu``: what it would write to a cgroup, and where, decided
without root or a cgroup (the writing itself needs both: ``bench/fanout.py`` runs it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.cpu_cap import (
    CpuCap,
    CpuCapError,
    Hierarchy,
    find_hierarchy,
    parse_fraction,
    settings,
    throttling,
)

# fanout.py runs as a script with bench/ on sys.path (`from _procs import ...`); appended,
# so bench/profile.py and the like do not shadow the standard library's.
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import fanout


def test_a_fraction_of_one_core_is_a_short_period_and_its_quota() -> None:
    cap = CpuCap(0.4)
    assert (cap.period_us, cap.quota_us) == (10_000, 4_000)
    v1 = {"cpu.cfs_period_us": "10000", "cpu.cfs_quota_us": "4000", "cpu.shares": "10240"}
    assert cap.settings(1) == v1
    assert list(cap.settings(1))[:2] == ["cpu.cfs_period_us", "cpu.cfs_quota_us"]  # period first
    assert cap.settings(2) == {"cpu.max": "4000 10000", "cpu.weight": "1000"}
    assert CpuCap(1).settings(2)["cpu.max"] == "10000 10000"


def test_the_budget_is_a_floor_too_ten_times_the_default_weight() -> None:
    assert CpuCap(0.3).settings(1)["cpu.shares"] == str(10 * 1024)
    assert CpuCap(0.3).settings(2)["cpu.weight"] == str(10 * 100)
    # The load generators' group: the same weight, no quota.
    assert settings(None, 1) == {"cpu.shares": "10240"}
    assert settings(None, 2) == {"cpu.weight": "1000"}
    assert settings(CpuCap(0.3), 2) == CpuCap(0.3).settings(2)


def test_a_small_fraction_gets_a_longer_period_not_a_quota_under_the_kernels_1_ms() -> None:
    assert (CpuCap(0.05).period_us, CpuCap(0.05).quota_us) == (20_000, 1_000)
    assert CpuCap(0.001).settings(2)["cpu.max"] == "1000 1000000"
    with pytest.raises(ValueError, match="under the kernel's 1 ms"):
        CpuCap(0.4, period_us=2_000)
    with pytest.raises(ValueError, match="outside the kernel's"):
        CpuCap(0.4, period_us=2_000_000)


@pytest.mark.parametrize("text", ["0", "-0.2", "1.5", "nan", "inf", "", "half", "40%"])
def test_a_fraction_outside_0_to_1_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match=r"fraction of one core|not a number") as info:
        parse_fraction(text)
    assert "\n" not in str(info.value)


def test_the_option_says_what_is_wrong() -> None:
    with pytest.raises(SystemExit):
        fanout.main_parser().parse_args(["--worker-cpu", "2"])
    assert fanout.main_parser().parse_args(["--worker-cpu", "0.25"]).worker_cpu == 0.25


def test_runs_are_workers_and_listeners_in_order() -> None:
    assert fanout.parse_runs("1:3000, 2:5400,1:3000") == [(1, 3000), (2, 5400), (1, 3000)]
    for bad in ("3000", "1:", "a:3", "0:100", "2:0", "1:2:3", "-1:5"):
        with pytest.raises(ValueError, match=r"WORKERS:LISTENERS|at least 1"):
            fanout.parse_runs(bad)


def test_v2_is_found_where_cgroup_controllers_lists_cpu(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert find_hierarchy(tmp_path) == Hierarchy(2, tmp_path)


@pytest.mark.parametrize("name", ["cpu", "cpu,cpuacct"])
def test_v1_is_found_in_its_cpu_hierarchy(tmp_path: Path, name: str) -> None:
    (tmp_path / "cgroup.controllers").write_text("pids\n")  # a hybrid's v2 without cpu
    (tmp_path / name).mkdir()
    (tmp_path / name / "cpu.cfs_quota_us").write_text("-1\n")
    assert find_hierarchy(tmp_path) == Hierarchy(1, tmp_path / name)


def test_no_cpu_controller_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(CpuCapError, match="no cgroup cpu controller") as info:
        find_hierarchy(tmp_path)
    assert "\n" not in str(info.value)


def test_throttling_is_read_from_v1_and_v2_cpu_stat() -> None:
    v1 = "nr_periods 120\nnr_throttled 30\nthrottled_time 123456\n"
    v2 = (
        "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 7\nnr_throttled 1\nthrottled_usec 9\n"
    )
    assert throttling(v1) == (120, 30)
    assert throttling(v2) == (7, 1)
    assert throttling("") == (0, 0)


def test_the_cpu_column_shows_usage_against_the_cap() -> None:
    row = {"server_cpu": 0.52, "busiest_worker_cpu": 0.27, "cpu_cap": 0.3, "throttled": 0.4}
    assert fanout.cpu_cell(row) == "52% (busiest 27% of a 30% cap, throttled 40%)"
    row = {"server_cpu": 0.52, "busiest_worker_cpu": 0.27, "cpu_cap": None, "throttled": None}
    assert fanout.cpu_cell(row) == "52% (busiest 27%)"
