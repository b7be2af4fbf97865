"""Keeping a fenced lease: a heartbeat thread that renews it only while the job makes progress.

A worker's training loop cannot renew its own lease: an evaluation or a checkpoint may take
longer than a lease, and the job would be taken away from a healthy worker. A thread that
renewed unconditionally would keep a hung job forever. So the LeaseKeeper renews while the loop
reports progress (each step) or says it is busy with long work (an evaluation, a checkpoint), and
stops renewing when neither happened for `stall_seconds`. A frozen process (SIGSTOP) freezes
its keeper too, so its lease runs out and the reaper hands the job on; when it wakes, its first
fenced write (or the keeper's next renewal) reports LeaseLost and it stops.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Callable, Optional

# GAND_LEASE_SECONDS and GAND_STALL_SECONDS are read and checked with every other setting.
from gand.settings import lease_seconds, stall_seconds  # noqa: F401  (re-exported)
from gand.store.fence import Lease
from gand.store.states import JobStatus

log = logging.getLogger("gand.lease")


class LeaseKeeper(threading.Thread):
    """Renews `lease` about four times a lease while the job progresses; says when to stop.

    `renew(step)` is the store's heartbeat for this lease: the job's status, or None once lost.
    `reason` is what the loop should do: None, "cancel" or "lease-lost".
    """

    def __init__(self, lease: Lease, renew: Callable[[Optional[int]], Optional[JobStatus]],
                 seconds: Optional[float] = None, stall: Optional[float] = None):
        super().__init__(daemon=True, name=f"gand-lease-{lease.job_id[:8]}")
        self.lease = lease
        self.renew = renew
        self.seconds = seconds if seconds is not None else lease_seconds()
        self.stall = stall if stall is not None else stall_seconds()
        self.interval = max(0.1, min(1.0, self.seconds / 4))
        self.reason: Optional[str] = None
        self._step: Optional[int] = None
        self._progress_at = time.monotonic()
        self._busy = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def progress(self, step: int) -> Optional[str]:
        """Called by the loop each step: records progress; returns why to stop, if it should."""
        self._step = step
        self._progress_at = time.monotonic()
        return self.reason

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Long work that is progress although no step advances (an evaluation, a checkpoint)."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
            self._progress_at = time.monotonic()

    def close(self) -> None:
        self._closing.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=5)

    def stalled(self) -> bool:
        return not self._busy and time.monotonic() - self._progress_at > self.stall

    def run(self) -> None:
        while not self._closing.wait(self.interval):
            if self.stalled():
                # Let the lease run out: the reaper gives the job to a worker that is alive.
                log.warning("%s: no progress for %.0fs; no longer renewing its lease", self.lease,
                            time.monotonic() - self._progress_at)
                continue
            try:
                status = self.renew(self._step)
            except Exception:  # a database blip: try again next turn; the lease has slack
                log.warning("%s: lease renewal failed; retrying", self.lease, exc_info=True)
                continue
            if status is None:
                self.reason = "lease-lost"
                log.warning("%s: lease lost", self.lease)
                return
            if status == JobStatus.cancelling and self.reason is None:
                self.reason = "cancel"
