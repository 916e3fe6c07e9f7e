"""What this node offers: one answer to "how many cores may I use here"."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup CPU bandwidth limit, or None when unlimited.

    cgroup v2 writes ``<quota> <period>`` to ``cpu.max`` ("max" means no limit);
    cgroup v1 splits them into ``cpu.cfs_quota_us`` (-1: no limit) and
    ``cpu.cfs_period_us``."""
    try:
        quota, period = (_CGROUP_ROOT / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((_CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((_CGROUP_ROOT / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def core_count() -> int:
    """Cores this process may run on: its CPU affinity set, lowered to the
    cgroup's CPU quota (rounded up) when a container limits it. At least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API on this platform
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)
