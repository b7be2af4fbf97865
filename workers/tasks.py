"""The Celery task a worker registers: it only forwards the job id to the runner."""
from __future__ import annotations

import logging
import threading
from typing import Optional

from celery import signals
from celery.exceptions import Reject

from gand import plugins, queue, settings as settings_mod
from gand.jobs.service import JobService
from gand_workers.runner import WorkerContext, run_job

log = logging.getLogger("gand.worker")

STOPPING = threading.Event()
_ctx: Optional[WorkerContext] = None


def context(name: str) -> WorkerContext:
    global _ctx
    if _ctx is None:
        s = settings_mod.load()
        reg = plugins.registry()
        for p in reg.plugins:
            if p.error:
                log.warning("plugin %s not loaded: %s", p.name, p.error)
        _ctx = WorkerContext(s, JobService(s), reg, name, STOPPING)
    return _ctx


@signals.worker_shutting_down.connect
def _on_shutdown(**_kwargs) -> None:
    # Celery's warm shutdown waits for the running task; this flag makes the training loop
    # checkpoint and hand the job back instead of finishing hours of work first.
    STOPPING.set()


@queue.app().task(name=queue.TASK, bind=True, acks_late=True, ignore_result=True)
def run_job_task(self, job_id: str) -> str:
    if not isinstance(job_id, str):
        log.warning("dropping malformed message %r", job_id)
        return "dropped"
    if STOPPING.is_set():
        # A message that arrives during a warm shutdown (often the job this worker just handed
        # back) goes back to the broker for another worker, instead of being run for a second.
        raise Reject("worker is shutting down", requeue=True)
    return run_job(context(self.request.hostname), job_id)
