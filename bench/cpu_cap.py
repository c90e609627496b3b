"""A fixed CPU budget per server process, from the kernel's CFS bandwidth control.

On a machine with fewer cores than server workers plus load generators, "one worker" and
"two workers" share the same cores with the listener processes, so a second worker gets no
core of its own and the scheduler, not the server, decides the lag. Giving every server
process the same budget (``--worker-cpu 0.4``: 40% of one core each, in a cgroup of its
own) makes one worker and two workers compare like with like: each worker has exactly the
budget it would have on a bigger machine where it had a share of a core, and the listener
processes get the rest.

The period is short (10 ms, quota 4 ms for 0.4) because a throttled process waits for the
next period: with the kernel's default 100 ms period a worker at 0.4 could run 40 ms and
then stall 60 ms, which the lag percentiles would show as the cap's artefact rather than the
server's load. At 10 ms a stall is at most 6 ms. The kernel refuses quotas below 1 ms, so a
small fraction gets a longer period (0.05 → 20 ms).

A quota is a ceiling only; each group also gets ten times the default weight, so on a
machine where other work runs too a worker that wants its budget gets it first: the budget
is then a floor as well (the caps keep it from taking more). The load generators (source
and listener processes) go into one group of the same weight without a quota: on a shared
machine they are not starved either (a starved listener process measures its own delay as
the server's lag, and two workers' listeners need more CPU than one's).

cgroup v1 (a ``cpu`` hierarchy, ``cpu.cfs_period_us`` / ``cpu.cfs_quota_us``) and v2
(``cpu.max``) are both supported; each group is created by the bench and removed when it is
done, also after a failure or Ctrl-C. Needs root (or a delegated, writable hierarchy).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The period a cap uses unless its quota would be under the kernel's minimum.
PERIOD_US = 10_000
MIN_QUOTA_US = 1_000  # the kernel's minimum quota and period
MAX_PERIOD_US = 1_000_000  # the kernel's maximum period
#: Ten times the default weight (v1 ``cpu.shares`` 1024, v2 ``cpu.weight`` 100).
WEIGHT = {1: ("cpu.shares", "10240"), 2: ("cpu.weight", "1000")}


class CpuCapError(RuntimeError):
    """The cap cannot be applied: the message is one line that says why and what to do."""


def parse_fraction(text: str) -> float:
    """``--worker-cpu``'s value: a fraction of one core, above 0 and at most 1 (a worker is
    one thread of Python: more than one core would not cap it)."""
    try:
        fraction = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r} (a fraction of one core, e.g. 0.4)") from None
    if not 0 < fraction <= 1 or math.isnan(fraction):
        raise ValueError(f"{text} is not a fraction of one core in (0, 1] (e.g. 0.4)")
    return fraction


def _fraction(_instance: object, _attribute: object, value: float) -> None:
    parse_fraction(str(value))


@attrs.frozen
class CpuCap:
    """``fraction`` of one core, as a quota of CPU time per ``period_us``."""

    fraction: float = attrs.field(validator=_fraction)
    period_us: int = attrs.field()

    @period_us.default
    def _period(self) -> int:
        # The shortest period at or above PERIOD_US whose quota is at least the kernel's 1 ms.
        return min(MAX_PERIOD_US, max(PERIOD_US, math.ceil(MIN_QUOTA_US / self.fraction)))

    @period_us.validator
    def _check_period(self, _attribute: object, value: int) -> None:
        if not MIN_QUOTA_US <= value <= MAX_PERIOD_US:
            raise ValueError(f"period {value} µs outside the kernel's 1 ms to 1 s")
        if self.fraction * value < MIN_QUOTA_US:
            raise ValueError(f"quota {self.fraction * value:.0f} µs under the kernel's 1 ms")

    @property
    def quota_us(self) -> int:
        return round(self.fraction * self.period_us)

    def settings(self, version: int) -> dict[str, str]:
        """The files to write in a group of cgroup ``version`` (1 or 2), in order."""
        weight, value = WEIGHT[version]
        if version == 1:
            # v1 checks quota against period as each is written: the period first.
            return {
                "cpu.cfs_period_us": str(self.period_us),
                "cpu.cfs_quota_us": str(self.quota_us),
                weight: value,
            }
        return {"cpu.max": f"{self.quota_us} {self.period_us}", weight: value}


def settings(cap: CpuCap | None, version: int) -> dict[str, str]:
    """A group's files: ``cap``'s, or (None: the load generators' group) the weight only."""
    return cap.settings(version) if cap is not None else dict([WEIGHT[version]])


@attrs.frozen
class Hierarchy:
    """Where groups with a ``cpu`` controller can be made: ``parent`` is the directory."""

    version: int = attrs.field(validator=attrs.validators.in_((1, 2)))
    parent: Path


def find_hierarchy(root: Path = CGROUP_ROOT) -> Hierarchy:
    """cgroup v2 if ``root`` is a v2 mount offering ``cpu``, else v1's ``cpu`` hierarchy
    (mounted alone or with cpuacct); a :class:`CpuCapError` if neither is there."""
    controllers = root / "cgroup.controllers"
    if controllers.is_file() and "cpu" in controllers.read_text().split():
        return Hierarchy(2, root)
    for name in ("cpu", "cpu,cpuacct"):
        if (root / name / "cpu.cfs_quota_us").is_file():
            return Hierarchy(1, root / name)
    raise CpuCapError(
        f"no cgroup cpu controller under {root} (cgroup v1 {root}/cpu/cpu.cfs_quota_us or v2 "
        f"{root}/cgroup.controllers listing cpu): run without --worker-cpu"
    )


def throttling(stat: str) -> tuple[int, int]:
    """``(periods, throttled periods)`` from a group's ``cpu.stat`` (v1 and v2 alike)."""
    fields = dict(line.split() for line in stat.splitlines() if line.count(" ") == 1)
    return int(fields.get("nr_periods", 0)), int(fields.get("nr_throttled", 0))


@attrs.define
class CpuGroup:
    """One capped group; a process joins it with :meth:`joiner` as its ``preexec_fn``."""

    path: Path
    cap: CpuCap | None

    def joiner(self) -> Callable[[], None]:
        """Run in the child before ``exec``: the child moves itself into the group, so its
        start-up is capped too and no thread escapes (threads inherit the group)."""
        procs = str(self.path / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as file:
                file.write(str(os.getpid()))

        return join

    def throttling(self) -> tuple[int, int]:
        return throttling((self.path / "cpu.stat").read_text())


@attrs.define
class CpuGroups:
    """Creates capped groups under a hierarchy and removes them all on :meth:`close`."""

    hierarchy: Hierarchy
    prefix: str = attrs.field(factory=lambda: f"mmstream-bench-{os.getpid()}")
    groups: list[CpuGroup] = attrs.field(factory=list)

    def create(self, cap: CpuCap | None) -> CpuGroup:
        """A group with ``cap``, or (None) with the weight only."""
        path = self.hierarchy.parent / f"{self.prefix}-{len(self.groups)}"
        try:
            if self.hierarchy.version == 2:
                _enable_cpu(self.hierarchy.parent)
            path.mkdir()
        except OSError as error:
            raise CpuCapError(
                f"cannot make a cgroup under {self.hierarchy.parent} ({error.strerror}): "
                "--worker-cpu needs root or a delegated cgroup"
            ) from None
        group = CpuGroup(path, cap)
        self.groups.append(group)
        try:
            for name, value in settings(cap, self.hierarchy.version).items():
                (path / name).write_text(value)
        except OSError as error:
            raise CpuCapError(f"cannot set the cap in {path} ({error.strerror})") from None
        return group

    def close(self, groups: list[CpuGroup] | None = None) -> None:
        """Remove ``groups`` (default: every group). A process still in one is a server the
        bench started and failed to stop (interrupted as it started, say): it is killed, not
        left running."""
        for group in list(self.groups if groups is None else groups):
            self.groups.remove(group)
            with contextlib.suppress(OSError):
                for pid in (group.path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
            for _ in range(50):  # a process that was just killed holds it for a moment
                try:
                    group.path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _enable_cpu(parent: Path) -> None:
    control = parent / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Clean-up runs to its end: a second Ctrl-C (or SIGTERM) meanwhile is ignored, so no
    server is left running and no group behind (the clean-up is bounded)."""
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def open_cpu_groups(root: Path = CGROUP_ROOT) -> Iterator[CpuGroups]:
    groups = CpuGroups(find_hierarchy(root))
    try:
        yield groups
    finally:
        with uninterrupted():
            groups.close()
