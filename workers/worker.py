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
from gand import settings as settings_mod
from gand.errors import BrokerUnavailable

log = logging.getLogger("gand.worker")

REAP_SECONDS = 5.0  # at most this long between two reaper passes of one worker


class BurstMonitor(threading.Thread):
    """Stops the worker once it is idle and its queues have stayed empty for a moment, or once
    the broker has not answered for `broker_timeout` seconds (a burst worker never hangs)."""

    def __init__(self, queues: list[str], ready: threading.Event, checks: int = 3,
                 interval: float = 0.5, broker_timeout: float = 60.0):
        super().__init__(daemon=True, name="gand-burst")
        self.queues, self.ready, self.checks, self.interval = queues, ready, checks, interval
        self.broker_timeout = broker_timeout
        self.failure: BrokerUnavailable | None = None

    def run(self) -> None:
        self.ready.wait()
        idle = 0
        unreachable_since: float | None = None
        while True:
            time.sleep(self.interval)
            busy = bool(worker_state.active_requests or worker_state.reserved_requests)
            try:
                waiting = 0 if busy else sum(queue.queue_length(q) for q in self.queues)
                unreachable_since = None
            except Exception as e:  # BrokerUnavailable, or anything else that is not "empty"
                # Not known to be empty, so not idle; but not worth waiting for forever either.
                waiting = 1
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since >= self.broker_timeout:
                    self.failure = BrokerUnavailable(
                        f"{e} (for {self.broker_timeout:g}s, GAND_BROKER_TIMEOUT); the burst "
                        f"worker stopped")
                    log.error("burst: %s", self.failure)
                    worker_state.should_stop = 1  # also ends Celery's own reconnect loop
                    return
            idle = idle + 1 if not busy and not waiting else 0
            if idle >= self.checks:
                log.info("burst: queues %s are empty; stopping", ",".join(self.queues))
                worker_state.should_stop = 0  # the consumer loop exits cleanly at its next turn
                return


def run(queues: list[str], concurrency: int = 1, burst: bool = False, loglevel: str = "INFO") -> int:
    # Every setting the worker and its jobs will read, checked now: a bad one is one line here
    # rather than a failure in a job or a thread later.
    settings_mod.load()
    timeout = settings_mod.broker_timeout()
    if concurrency > 1:
        return supervise(queues, concurrency, burst, loglevel)
    logging.basicConfig(level=loglevel, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    celery = queue.app()
    # Celery retries a broker that is down for good forever; gand waits GAND_BROKER_TIMEOUT.
    queue.wait_for_broker(timeout, celery)
    import gand_workers.tasks  # noqa: F401  (registers the task on the app)

    ready = threading.Event()
    signals.worker_ready.connect(lambda **_: ready.set(), weak=False)
    monitor = None
    if burst:
        monitor = BurstMonitor(queues, ready, broker_timeout=timeout)
        monitor.start()
    hostname = f"gand-{os.getpid()}@{socket.gethostname()}"
    start_reaper(hostname)
    worker = celery.Worker(
        hostname=hostname,
        queues=queues, pool="solo", concurrency=1, loglevel=loglevel, quiet=True,
        # No gossip, mingle or heartbeat events: gand's liveness is the database lease and the
        # control ping. Celery's heartbeat publish also retries a dead broker forever inside
        # the consumer loop, where nothing (not even a burst stop) can end it.
        without_gossip=True, without_mingle=True, without_heartbeat=True, optimization="fair",
    )
    worker.start()
    if monitor is not None and monitor.failure is not None:
        raise monitor.failure
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
                # Never this process's own job: it is alive, so its job is not dead. A stall
                # or a starved keeper must not make a worker take its own job away.
                jobs.reap(self.reaper, skip_worker=self.reaper)
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
