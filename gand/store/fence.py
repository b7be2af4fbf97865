"""Fencing tokens: what makes a lease safe against a worker that was paused and woke up late.

A claim increments the job's `epoch` and hands the worker a Lease (job, worker, epoch). Every
write a worker makes for that job passes the Lease, and the store performs it only while the job
still names that worker and that epoch and is active, in the same transaction as the write. A
worker frozen past its lease (SIGSTOP, a VM pause, a long GC) finds on waking that the reaper or
a new owner moved the job on: its write is refused with LeaseLost and it must stop at once.
(Fencing tokens are how Chubby and ZooKeeper make leases safe; see ARCHITECTURE.md.)
"""
from __future__ import annotations

from dataclasses import dataclass

from gand.errors import GandError


@dataclass(frozen=True)
class Lease:
    """A worker's right to write for one job, for as long as the job's epoch is `epoch`."""

    job_id: str
    worker: str
    epoch: int

    def __str__(self) -> str:
        return f"job {self.job_id} epoch {self.epoch} on {self.worker}"


class LeaseLost(GandError):
    """The job was taken over (or ended) since this lease was granted: write nothing more."""

    def __init__(self, lease: Lease):
        super().__init__(f"lease lost: {lease} is no longer the job's owner")
        self.lease = lease
