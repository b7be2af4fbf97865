"""The Celery task a worker registers: a message wakes the worker, which then runs the best
queued jobs it can (the database decides which), one after the other, until there are none."""
from __future__ import annotations

import logging
import threading
from typing import Optional

from celery import signals
from celery.exceptions import Reject
from celery.worker import state as worker_state

from gand import queue, settings as settings_mod
from gand_workers.runner import WorkerContext, run_job

log = logging.getLogger("gand.worker")

STOPPING = threading.Event()
_ctx: Optional[WorkerContext] = None
_current: Optional[str] = None  # the job this process is running, for its registry heartbeat
_max_jobs = 0                   # --max-jobs-per-child (0: no limit)
_done = 0


def setup(me, jobs, registry, max_jobs_per_child: int = 0) -> None:
    """Called once by the worker process before it consumes anything."""
    global _ctx, _max_jobs
    _ctx = WorkerContext(settings_mod.load(), jobs, registry, me.name, STOPPING, me)
    _max_jobs = max_jobs_per_child


def current_job() -> Optional[str]:
    return _current


@signals.worker_shutting_down.connect
def _on_shutdown(**_kwargs) -> None:
    # Celery's warm shutdown waits for the running task; this flag makes the training loop
    # checkpoint and hand the job back instead of finishing hours of work first.
    STOPPING.set()


@queue.app().task(name=queue.TASK, bind=True, acks_late=True, ignore_result=True)
def run_job_task(self, job_id: str) -> str:
    global _current, _done
    if not isinstance(job_id, str):
        log.warning("dropping malformed message %r", job_id)
        return "dropped"
    if STOPPING.is_set():
        # A message that arrives during a warm shutdown (often the job this worker just handed
        # back) goes back to the broker for another worker, instead of being run for a second.
        raise Reject("worker is shutting down", requeue=True)
    ctx = _ctx
    outcome = "idle"
    while not STOPPING.is_set():
        writer = ctx.jobs.claim_next(ctx.me.row(), hint=job_id)
        if writer is None:
            break
        _current = writer.job_id
        ctx.jobs.store.worker_seen(ctx.name, state="busy", job_id=_current)
        try:
            outcome = run_job(ctx, writer)
        finally:
            _current = None
            ctx.jobs.store.worker_seen(ctx.name, state="idle", job_id=None)
        _done += 1
        if _max_jobs and _done >= _max_jobs:
            # Recycled: the supervisor starts a fresh process, which frees all GPU memory.
            log.info("ran %d jobs (--max-jobs-per-child); retiring", _done)
            worker_state.should_stop = 0
            break
    return outcome
