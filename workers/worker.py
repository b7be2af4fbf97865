"""`gand worker`: a Celery worker that runs one job at a time, N of them side by side.

Each worker process uses the solo pool: the job runs in the process that received the message,
so SIGTERM reaches the training loop directly and CUDA is never forked. `--concurrency N`
starts N such processes; `--burst` makes each exit once its queues are empty.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from celery import signals
from celery.worker import state as worker_state

from gand import queue

log = logging.getLogger("gand.worker")

REAP_SECONDS = 5.0  # at most this long between two reaper passes of one worker


class BurstMonitor(threading.Thread):
    """Stops the worker once it is idle and its queues have stayed empty for a moment."""

    def __init__(self, queues: list[str], ready: threading.Event, checks: int = 3, interval: float = 0.5):
        super().__init__(daemon=True, name="gand-burst")
        self.queues, self.ready, self.checks, self.interval = queues, ready, checks, interval

    def run(self) -> None:
        self.ready.wait()
        idle = 0
        while True:
            time.sleep(self.interval)
            busy = bool(worker_state.active_requests or worker_state.reserved_requests)
            try:
                waiting = 0 if busy else sum(queue.queue_length(q) for q in self.queues)
            except Exception:  # the broker is restarting: not known to be empty, so not idle
                waiting = 1
            idle = idle + 1 if not busy and not waiting else 0
            if idle >= self.checks:
                log.info("burst: queues %s are empty; stopping", ",".join(self.queues))
                worker_state.should_stop = 0  # the consumer loop exits cleanly at its next turn
                return


def run(queues: list[str], concurrency: int = 1, burst: bool = False, loglevel: str = "INFO") -> int:
    if concurrency > 1:
        return supervise(queues, concurrency, burst, loglevel)
    logging.basicConfig(level=loglevel, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    celery = queue.app()
    import gand_workers.tasks  # noqa: F401  (registers the task on the app)

    ready = threading.Event()
    signals.worker_ready.connect(lambda **_: ready.set(), weak=False)
    if burst:
        BurstMonitor(queues, ready).start()
    hostname = f"gand-{os.getpid()}@{socket.gethostname()}"
    start_reaper(hostname)
    worker = celery.Worker(
        hostname=hostname,
        queues=queues, pool="solo", concurrency=1, loglevel=loglevel, quiet=True,
        without_gossip=True, without_mingle=True, optimization="fair",
    )
    worker.start()
    return worker.exitcode or 0


class ReaperThread(threading.Thread):
    """Runs a reaper pass (gand.jobs.reaper) when the worker starts and every `interval` s."""

    def __init__(self, name: str, interval: float):
        super().__init__(daemon=True, name="gand-reaper")
        self.reaper, self.interval = name, interval
        self.stop = threading.Event()

    def run(self) -> None:
        from gand.jobs.service import JobService

        jobs = None
        while not self.stop.is_set():
            try:
                jobs = jobs or JobService()
                jobs.reap(self.reaper)
            except Exception:  # a database or broker outage must not kill the thread
                log.warning("reaper pass failed; retrying in %.0fs", self.interval, exc_info=True)
            self.stop.wait(self.interval)


def start_reaper(name: str) -> None:
    """Every worker also recovers jobs whose worker died: once now, then every few seconds."""
    from gand.jobs.lease import lease_seconds

    # Half a lease: a dead worker's job is back in the queue within 1.5 leases of its death.
    interval = max(0.5, min(REAP_SECONDS, lease_seconds() / 2))
    ReaperThread(name, interval).start()


def supervise(queues: list[str], n: int, burst: bool, loglevel: str) -> int:
    """N single-job worker processes; SIGTERM/SIGINT is passed on to each of them."""
    args = [sys.executable, "-m", "gand", "worker", "--queues", ",".join(queues), "--concurrency", "1",
            "--loglevel", loglevel] + (["--burst"] if burst else [])
    children = [subprocess.Popen(args) for _ in range(n)]

    def forward(sig, _frame):
        for c in children:
            if c.poll() is None:
                c.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [c.wait() for c in children]
    return max(codes, default=0)
