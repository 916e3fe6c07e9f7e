"""What this node offers: one answer to "how many cores may I use here", and
one to "how many GPUs" (`gpu_count`)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")
#: what a batch system or the user sets to say which GPUs a process may use, first one set wins
GPU_VISIBILITY_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
#: seconds ``nvidia-smi -L`` may take (a hung driver must not hang capacity())
NVIDIA_SMI_TIMEOUT = 10.0
_NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
_KFD_NODES = Path("/sys/class/kfd/kfd/topology/nodes")


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


def gpu_count() -> int | None:
    """GPUs this process may use: an int when known (0: known to have none),
    None when there may be GPUs but their number cannot be read.

    In order, the first that answers:

    1. ``CUDA_VISIBLE_DEVICES`` / ``ROCR_VISIBLE_DEVICES`` /
       ``HIP_VISIBLE_DEVICES``, the first one set: the number of devices it
       lists (empty or ``-1`` / ``NoDevFiles``: 0). Trusted as given, as the
       CUDA and ROCm runtimes do: a batch system sets it to the allocation.
    2. NVIDIA's driver (NVML) through ``nvidia-smi -L``, then
       ``/proc/driver/nvidia/gpus``, then the ``/dev/nvidiaN`` device files.
    3. AMD's kernel driver: ``/sys/class/kfd`` topology nodes that have SIMD units.
    4. None of these drivers present: 0. A driver that is there but cannot
       be read (``nvidia-smi`` failing or hanging, nothing else to count): None,
       never 0, so a GPU node is never reported as having no GPUs.
    """
    for name in GPU_VISIBILITY_VARIABLES:
        value = os.environ.get(name)
        if value is not None:
            return _count_listed(value)
    nvidia = _nvidia_count()
    if nvidia is not None and nvidia > 0:
        return nvidia
    amd = _amd_count()
    if amd:
        return amd
    return nvidia  # 0: neither driver is there; None: NVIDIA's is, unreadable


def _count_listed(value: str) -> int:
    entries = [part.strip() for part in value.split(",") if part.strip()]
    if entries in ([], ["-1"], ["NoDevFiles"]):
        return 0
    return len(entries)


def _nvidia_count() -> int | None:
    """NVIDIA GPUs on this node; 0 when no NVIDIA driver is there; None when
    one is but no source could be read."""
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0:
            return sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))
    try:
        listed = len(list(_NVIDIA_PROC.iterdir()))
    except OSError:
        listed = 0
    if listed:
        return listed
    devices = [p for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)]
    if devices:
        return len(devices)
    return None if smi is not None else 0


def _amd_count() -> int:
    """AMD GPUs known to the kfd driver (its CPU nodes have no SIMD units)."""
    count = 0
    try:
        nodes = list(_KFD_NODES.iterdir())
    except OSError:
        return 0
    for node in nodes:
        try:
            props = (node / "properties").read_text()
        except OSError:
            continue
        match = re.search(r"^simd_count\s+(\d+)", props, re.MULTILINE)
        if match and int(match.group(1)) > 0:
            count += 1
    return count
