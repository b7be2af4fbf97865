"""`gand worker`: one worker process per job slot, under a supervisor when there are several.

A worker process is a Celery worker on the solo pool: the job runs in the process that received
the message, so SIGTERM reaches the training loop directly and CUDA is never forked. With
`--gpus` or `--concurrency N` the command is a supervisor (gand_workers.supervisor) that starts
one such process per slot. Each worker process records itself in the worker registry and
heartbeats there; the database decides which job it runs (gand.jobs.service.claim_next), and a
message only wakes it. An idle worker also looks at the database every few seconds, so a job that
waits for a worker able to run it (or whose message was lost) is found without a message.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from typing import Optional

from celery import signals
from celery.worker import state as worker_state

from gand import queue, settings as settings_mod
from gand.errors import BrokerUnavailable

log = logging.getLogger("gand.worker")

FLEET_SECONDS = 5.0  # at most this long between two heartbeats / reaper passes of a worker
FORGET_SECONDS = 24 * 3600  # registry rows not heard of for a day are removed


@dataclass
class Identity:
    """Who this worker process is, as the registry and the placement rule see it."""

    name: str                      # gand-PID@HOST, also Celery's hostname
    host: str
    queues: list[str]
    gpus: list[dict]
    slot: Optional[str]
    variants: list[str] = field(default_factory=list)

    @property
    def private_queue(self) -> str:
        # A queue only this process consumes: its own wake-up calls land here.
        return "gand.w." + re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)

    def row(self) -> dict:
        """The shape of a registry row (Worker.to_json), for gand.jobs.placement."""
        return {"worker": self.name, "queues": self.queues, "gpus": self.gpus,
                "variants": self.variants, "state": "idle"}


def identity(queues: list[str]) -> Identity:
    host = os.environ.get("GAND_HOSTNAME") or socket.gethostname()
    gpus = json.loads(os.environ["GAND_WORKER_GPUS"]) if "GAND_WORKER_GPUS" in os.environ \
        else _own_gpus()
    return Identity(f"gand-{os.getpid()}@{host}", host, queues, gpus,
                    os.environ.get("GAND_WORKER_SLOT"))


def _own_gpus() -> list[dict]:
    """A worker without a supervisor uses every GPU it can see (found without CUDA)."""
    from gand_workers.gpus import discover

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    found = discover()
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        found = [g for g in found if g.uuid in wanted or str(g.index) in wanted]
    return [g.to_json() for g in found]


def run(queues: list[str], concurrency: int = 1, burst: bool = False, loglevel: str = "INFO",
        gpus: Optional[str] = None, jobs_per_gpu: int = 1, max_jobs_per_child: int = 0,
        child: bool = False) -> int:
    # Every setting the worker and its jobs will read, checked now: a bad one is one line here
    # rather than a failure in a job or a thread later.
    settings_mod.load()
    settings_mod.broker_timeout()
    logging.basicConfig(level=loglevel, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not child and (gpus is not None or concurrency > 1):
        from gand_workers import gpus as gpu_mod, supervisor

        chosen = gpu_mod.select(gpus or "none", gpu_mod.discover())
        try:
            queue.declare(queues)  # before the children start together: see queue.declare
        except Exception as e:  # the broker is down: each child waits for it, and declares
            log.warning("could not declare queues %s before starting the children: %s",
                        ",".join(queues), e)
        args = ["--queues", ",".join(queues), "--loglevel", loglevel,
                "--max-jobs-per-child", str(max_jobs_per_child)] + (["--burst"] if burst else [])
        return supervisor.supervise(args, supervisor.slots(chosen, jobs_per_gpu, concurrency),
                                    burst)
    return run_one(queues, burst, loglevel, max_jobs_per_child)


def run_one(queues: list[str], burst: bool, loglevel: str, max_jobs_per_child: int) -> int:
    """One worker process: registers itself, then consumes its queues until told to stop."""
    from gand import plugins
    from gand.jobs.service import JobService

    celery = queue.app()
    timeout = settings_mod.broker_timeout()
    # Celery retries a broker that is down for good forever; gand waits GAND_BROKER_TIMEOUT.
    queue.wait_for_broker(timeout, celery)
    import gand_workers.tasks as tasks

    me = identity(queues)
    settings_mod.load().check_artifacts()  # before taking any job: say so if it cannot see them
    registry = plugins.registry()
    for p in registry.plugins:
        if p.error and p.error != plugins.NOT_ALLOWED:
            log.warning("plugin %s not loaded: %s", p.name, p.error)
    me.variants = sorted(registry.variants)
    jobs = JobService()
    jobs.store.register_worker(name=me.name, host=me.host, pid=os.getpid(), queues=me.queues,
                               gpus=me.gpus, variants=me.variants, slot=me.slot)
    tasks.setup(me, jobs, registry, max_jobs_per_child)

    ready = threading.Event()
    signals.worker_ready.connect(lambda **_: ready.set(), weak=False)
    monitor = None
    if burst:
        monitor = BurstMonitor(me, jobs, ready, broker_timeout=timeout)
        monitor.start()
    fleet = FleetThread(me, ready)
    fleet.start()
    worker = celery.Worker(
        hostname=me.name,
        queues=me.queues + [me.private_queue], pool="solo", concurrency=1, loglevel=loglevel,
        quiet=True, optimization="fair",
        # No gossip, mingle or heartbeat events: gand's liveness is the database (leases and the
        # worker registry). Celery's heartbeat publish also retries a dead broker forever inside
        # the consumer loop, where nothing (not even a burst stop) can end it.
        without_gossip=True, without_mingle=True, without_heartbeat=True,
        # Celery's consumer looks whether to stop every 2 s; gand's every 0.2 s (a burst stop
        # or an idle worker's shutdown then takes effect at once).
        consumer_cls="gand_workers.consumer:Consumer",
    )
    try:
        worker.start()
    finally:
        fleet.stop.set()
        fleet.join(timeout=10)  # its next heartbeat must not overwrite "stopped"
        try:
            jobs.store.worker_seen(me.name, state="stopped", job_id=None)
        except Exception:  # the database is gone too: the registry will call it lost
            log.warning("could not record that worker %s stopped", me.name)
    if monitor is not None and monitor.failure is not None:
        raise monitor.failure
    return worker.exitcode or 0


def busy() -> bool:
    return bool(worker_state.active_requests or worker_state.reserved_requests)


class BurstMonitor(threading.Thread):
    """Stops the worker once it is idle, its queues have stayed empty for a moment, and the
    database holds no queued job it could run; or once the broker has not answered for
    `broker_timeout` seconds (a burst worker never hangs)."""

    def __init__(self, me: Identity, jobs, ready: threading.Event, checks: int = 3,
                 interval: float = 0.5, broker_timeout: float = 60.0):
        super().__init__(daemon=True, name="gand-burst")
        self.me, self.jobs, self.ready = me, jobs, ready
        self.checks, self.interval = checks, interval
        self.broker_timeout = broker_timeout
        self.failure: BrokerUnavailable | None = None

    def run(self) -> None:
        self.ready.wait()
        idle = 0
        unreachable_since: float | None = None
        while True:
            time.sleep(self.interval)
            waiting = 1
            if not busy():
                try:
                    waiting = sum(queue.queue_length(q) for q in self.me.queues)
                    unreachable_since = None
                except Exception as e:  # BrokerUnavailable, or anything else that is not "empty"
                    # Not known to be empty, so not idle; but not worth waiting for forever.
                    unreachable_since = unreachable_since or time.monotonic()
                    if time.monotonic() - unreachable_since >= self.broker_timeout:
                        self.failure = BrokerUnavailable(
                            f"{e} (for {self.broker_timeout:g}s, GAND_BROKER_TIMEOUT); the burst "
                            f"worker stopped")
                        log.error("burst: %s", self.failure)
                        worker_state.should_stop = 1  # also ends Celery's own reconnect loop
                        return
                if not waiting:
                    try:  # a queued job this worker can run, whose message is elsewhere or lost
                        waiting = int(self.jobs.next_for(self.me.row()) is not None)
                    except Exception:  # the database is restarting: not known to be idle
                        waiting = 1
            idle = idle + 1 if not busy() and not waiting else 0
            if idle >= self.checks:
                log.info("burst: queues %s are empty; stopping", ",".join(self.me.queues))
                worker_state.should_stop = 0  # the consumer loop exits cleanly at its next turn
                return


class FleetThread(threading.Thread):
    """The worker's life in the fleet, every few seconds: its registry heartbeat, a reaper pass
    (requeue jobs whose worker died), and, when idle, a look for a queued job it can run whose
    wake-up message is missing (handed back by a worker that could not run it, or lost while
    the broker was down): it then wakes itself through its private queue."""

    def __init__(self, me: Identity, ready: threading.Event):
        super().__init__(daemon=True, name="gand-fleet")
        from gand.jobs.lease import lease_seconds

        self.me, self.ready = me, ready
        # Half a lease: a dead worker's job is back in the queue within 1.5 leases of its death.
        self.interval = max(0.5, min(FLEET_SECONDS, lease_seconds() / 2))
        self.stop = threading.Event()

    def run(self) -> None:
        from gand.jobs.service import JobService

        import gand_workers.tasks as tasks

        jobs, pruned = None, 0.0
        self.ready.wait(60)
        while not self.stop.is_set():
            try:
                jobs = jobs or JobService()
                if time.monotonic() - pruned > FORGET_SECONDS / 24:
                    pruned = time.monotonic()
                    jobs.store.forget_workers(datetime.now(timezone.utc)
                                              - timedelta(seconds=FORGET_SECONDS))
                job = tasks.current_job()
                jobs.store.worker_seen(self.me.name, state="busy" if job else "idle",
                                       job_id=job)
                # Never this process's own job: it is alive, so its job is not dead. A stall
                # or a starved keeper must not make a worker take its own job away.
                jobs.reap(self.me.name, skip_worker=self.me.name)
                if not busy() and not tasks.STOPPING.is_set():
                    self._wake_if_work(jobs)
            except Exception:  # a database or broker outage must not kill the thread
                log.warning("fleet pass failed; retrying in %.0fs", self.interval, exc_info=True)
            self.stop.wait(self.interval)

    def _wake_if_work(self, jobs) -> None:
        job = jobs.next_for(self.me.row())
        if job is None:
            return
        if any(queue.queue_length(q) for q in self.me.queues + [self.me.private_queue]):
            return  # a message is on its way to some worker already
        queue.enqueue(job.id, self.me.private_queue)
