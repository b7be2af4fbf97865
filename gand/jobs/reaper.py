"""The reaper: finds jobs whose worker died and sends them back to the queue.

A worker's LeaseKeeper renews its job's lease several times a lease (gand.jobs.lease). A lease that
has run out means the worker was SIGKILLed, its machine is gone or it lost the database; the
reaper moves such a job running → recovering → queued (one event each) and publishes its message
again, and the next worker continues from the latest valid checkpoint. Every worker runs a reaper
thread, and `gand reap` runs one pass on demand.

Two reapers never recover one job twice: the first move is a compare-and-set on the status *and*
on the lease still being expired, so exactly one of them wins it; the second move is a
compare-and-set on `recovering`.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from gand import queue
from gand.errors import GandError, TransitionRejected
from gand.jobs.config import MAX_RECOVERIES
from gand.store import JobStatus, Store

log = logging.getLogger("gand.reaper")


@dataclass
class Reaped:
    """What one pass did to one job, for `gand reap --json` and the worker log."""

    job: str
    dead_worker: str | None
    lease_expired_at: str | None
    action: str  # "requeued", "cancelled", "failed", "lost-race", "requeued-not-sent"
    recoveries: int
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


def _aware(t: datetime | None) -> datetime | None:
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t


def reap(store: Store, reaper: str, now: datetime | None = None,
         stale_after: float = 30.0, skip_worker: str | None = None) -> list[Reaped]:
    """One pass: recovers every job whose lease ran out before `now`; returns what it did.

    `stale_after` seconds is how long a job may sit in `recovering` (a reaper that died between
    its two moves) before another reaper finishes the move. Jobs held by `skip_worker` are left
    alone: a worker's own reaper must not take a job from the (living) process it runs in when a
    loaded machine delays that process's lease renewal; if its job really hung, the keeper stops
    renewing and any other reaper (another worker, `gand reap`) hands it on.
    """
    now = now or datetime.now(UTC)
    done: list[Reaped] = []
    for job in store.expired_leases(now):
        if skip_worker is not None and job.worker == skip_worker:
            continue
        done.append(_recover(store, job, reaper, now))
    # A reaper killed between running → recovering and recovering → queued left this behind.
    for job in store.list_jobs(JobStatus.recovering):
        if _aware(job.updated_at) < now - timedelta(seconds=stale_after):
            done.append(_requeue(store, job, reaper, job.worker, None))
    return done


def _recover(store: Store, job, reaper: str, now: datetime) -> Reaped:
    dead, expired = job.worker, _aware(job.lease_expires_at)
    when = f"{expired:%Y-%m-%d %H:%M:%S} UTC" if expired else "unknown"
    why = f"worker {dead} stopped renewing its lease (expired {when})"
    try:
        if job.status == JobStatus.cancelling:
            # The user asked to stop it and its worker is gone: nothing left to do but record it.
            store.transition(job.id, JobStatus.cancelling, JobStatus.cancelled, worker=reaper,
                             reason=f"{why}; it was being cancelled", expired_before=now)
            log.info("job %s: %s; cancelled", job.id, why)
            return Reaped(job.id, dead, str(expired), "cancelled", job.recoveries, why)
        store.transition(job.id, JobStatus.running, JobStatus.recovering, worker=reaper,
                         reason=why, expired_before=now)
    except TransitionRejected as e:
        # Another reaper got there first, or the worker came back and renewed its lease.
        return Reaped(job.id, dead, str(expired), "lost-race", job.recoveries, str(e))
    return _requeue(store, job, reaper, dead, why)


def _requeue(store: Store, job, reaper: str, dead: str | None, why: str | None) -> Reaped:
    why = why or f"recovery by a reaper that stopped half-way (worker {dead})"
    limit = int(job.config.get("max_recoveries", MAX_RECOVERIES))  # any config version
    try:
        if job.recoveries >= limit:
            reason = (f"{why}; gave up after {job.recoveries} recoveries "
                      f"(--max-recoveries {limit})")
            store.transition(job.id, JobStatus.recovering, JobStatus.failed, worker=reaper,
                             reason=reason, error=reason)
            log.warning("job %s failed: %s", job.id, reason)
            return Reaped(job.id, dead, None, "failed", job.recoveries, reason)
        n = job.recoveries + 1
        reason = f"{why}; recovery {n} of at most {limit}"
        fresh = store.transition(job.id, JobStatus.recovering, JobStatus.queued, worker=reaper,
                                 reason=reason, recoveries=n)
    except TransitionRejected as e:
        return Reaped(job.id, dead, None, "lost-race", job.recoveries, str(e))
    try:
        queue.enqueue(job.id, fresh.queue)
    except GandError as e:
        # Queued in the database without a message (the broker is down): say so on the job.
        store.note(job.id, f"requeued but not sent: {e}", worker=reaper)
        log.error("job %s: %s", job.id, e)
        return Reaped(job.id, dead, None, "requeued-not-sent", n, str(e))
    log.info("job %s: %s", job.id, reason)
    return Reaped(job.id, dead, None, "requeued", n, reason)
