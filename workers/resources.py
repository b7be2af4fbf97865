"""A job's peak memory, host and GPU, reported with its metrics (to pack jobs on machines).

A worker process runs one job after another, so the process's own peak (`ru_maxrss`) would
carry an earlier, bigger job's peak into a later one. On Linux the peak resident set (VmHWM) is
reset at each job's start by writing "5" to /proc/self/clear_refs; where that is not allowed,
the process's peak since it started is reported instead, and a job event says so.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Optional

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_rss_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The peak resident set of this process, in MiB (since the last reset, where there is one)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, kB here


class JobPeaks:
    """Resets the peaks when a job starts; `rows(step)` are its peaks so far as metric rows."""

    def __init__(self) -> None:
        self.per_job = _reset_rss_peak()
        self.device: Optional[torch.device] = None

    @property
    def caveat(self) -> Optional[str]:
        if self.per_job:
            return None
        return ("peak_rss_mb is this worker process's peak since it started, not this job's own: "
                "the peak cannot be reset here (/proc/self/clear_refs is not writable)")

    def watch(self, device: torch.device) -> None:
        """The job's device is known (its models are built): reset its GPU memory peak."""
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def rows(self, step: int) -> list[tuple[int, str, float]]:
        rows = [(step, "peak_rss_mb", peak_rss_mb())]
        if self.device is not None and self.device.type == "cuda":
            # The allocator's own count: no synchronisation, cheap at every flush.
            rows.append((step, "peak_gpu_mb", torch.cuda.max_memory_allocated(self.device) / 2**20))
        return rows
