"""Fenced leases with real worker processes: a frozen worker that wakes up writes nothing, long
work keeps its lease, and a job stored before configs had a version still loads and resumes.

The store-level guarantees (every fenced write refused, one series per step) are in
test_store.py, on SQLite and PostgreSQL; here real `gand worker` processes are frozen, woken
and raced against each other.
"""
from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from support import fake_dist

from gand.store import JobStatus, Store


def store_for(g) -> Store:
    return Store(g.env.get("GAND_DATABASE_URL") or f"sqlite:///{g.home / 'gand.db'}")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(interval)


def freeze_outside_a_write(pid: int, db: Path) -> None:
    """SIGSTOP `pid`, but not in the middle of a SQLite write: a process frozen inside one
    keeps the database's write lock (POSIX locks outlive a stop), so no other process could
    write until it woke. That is a database lock, not a fencing question (on PostgreSQL such a
    process would hold its transaction's row locks the same way; see the closing note)."""
    import sqlite3

    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        try:
            con = sqlite3.connect(db, timeout=2)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
                return
            finally:
                con.close()
        except sqlite3.OperationalError:  # frozen holding the write lock: let it finish
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.3)
    raise AssertionError("could not freeze the worker outside a database write")


class StepWatcher(threading.Thread):
    """Reads the job's step over and over: the test asserts it never went down."""

    def __init__(self, store: Store, job_id: str):
        super().__init__(daemon=True)
        self.store, self.job_id, self.seen = store, job_id, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.seen.append(self.store.get_job(self.job_id).step)
            time.sleep(0.05)


def test_a_worker_frozen_past_its_lease_writes_nothing_after_the_takeover(gand, gand_inprocess):
    """SIGSTOP worker A mid-job; B takes over and passes A's next checkpoints; SIGCONT A."""
    g = gand
    total, every = 6000, 200
    job_id = gand_inprocess.json("submit", "gan", "--data", "ring8", "--steps", str(total),
                                 "--checkpoint-every", str(every), "--sample-every", "1000",
                                 "--keep-checkpoints", "0", "--seed", "1",
                                 "--batch-size", "64")["id"]  # not the recipe's 2048
    store = store_for(g)
    a = g.worker(burst=False)
    a_name = f"gand-{a.pid}@"
    job = wait_until(lambda: (j := store.get_job(job_id)).step >= 2 * every and j, 120,
                     "worker A to pass two checkpoints")
    watcher = StepWatcher(store, job_id)
    watcher.start()
    freeze_outside_a_write(a.pid, g.home / "gand.db")
    try:
        frozen_step = store.get_job(job_id).step
        assert store.get_job(job_id).worker.startswith(a_name)
        b = g.worker(burst=False)
        b_name = f"gand-{b.pid}@"
        # B's reaper finds A's lease expired (4 s), requeues the job, and B claims it.
        job = wait_until(lambda: (j := store.get_job(job_id)).worker and
                         j.worker.startswith(b_name) and j, 120, "worker B to take the job")
        assert job.epoch == 2
        takeover = max(e.time for e in store.events(job_id) if e.reason == "claimed")
        next_ckpt = (frozen_step // every + 2) * every  # A's next checkpoints, passed by B
        wait_until(lambda: store.get_job(job_id).step >= next_ckpt, 120,
                   f"worker B to pass step {next_ckpt}")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # A wakes while B owns the job: its next write (or its keeper's renewal) finds the fence.
    wait_until(lambda: "lease lost" in g.worker_log(0), 60, "worker A to notice its lost lease")
    job = wait_until(lambda: (j := store.get_job(job_id)).status in (JobStatus.succeeded,
                                                                      JobStatus.failed) and j,
                     180, "the job to end")
    watcher.done.set()
    watcher.join()
    assert job.status == JobStatus.succeeded and job.step == total, job.error
    assert watcher.seen == sorted(watcher.seen), "the job's step went down"

    # Every recorded checkpoint exists and verifies.
    checkpoints = store.checkpoints(job_id)
    assert checkpoints and checkpoints[-1].step == total
    for c in checkpoints:  # stored relative to the artifacts root, GAND_HOME here
        assert hashlib.sha256((g.home / c.path).read_bytes()).hexdigest() == c.sha256, c.path
    # A (epoch 1) wrote nothing after B's claim: no metric, checkpoint, artifact or event.
    stale_metrics = [m for m in store.metrics(job_id, superseded=True)
                     if m.epoch == 1 and m.time > takeover]
    assert stale_metrics == []
    assert [c for c in checkpoints if "-e1." in c.path and c.time > takeover] == []
    assert [x for x in store.artifacts(job_id) if "-e1." in x.path and x.time > takeover] == []
    assert [e for e in store.events(job_id)
            if e.worker and e.worker.startswith(a_name) and e.time > takeover] == []
    # Nor a stray file of its own on disk after the takeover.
    run_dir = g.home / "runs" / job_id
    late = [p for p in run_dir.rglob("*-e1.*")
            if datetime.fromtimestamp(p.stat().st_mtime).astimezone() > takeover]
    assert late == []
    # One series per step: the metrics show each step once, B's where it re-trained.
    g_steps = [m.step for m in store.metrics(job_id, "g_loss")]
    assert g_steps == sorted(set(g_steps)) and g_steps[-1] == total
    store.close()


def test_the_lease_keeper_renews_only_while_the_job_progresses(tmp_path):
    """Steps and long work (busy) renew the lease; a loop that stalls lets it run out."""
    from gand.jobs.lease import LeaseKeeper

    store = Store(f"sqlite:///{tmp_path / 'gand.db'}")
    job = store.create_job(variant="gan", loss="bce", data=["ring8"], config={}, total_steps=9)
    _, lease = store.claim(job.id, "w1", 1.0)
    keeper = LeaseKeeper(lease, lambda step: store.heartbeat(lease, 1.0, step), seconds=1.0,
                         stall=0.6)
    expiry = lambda: store.get_job(job.id).lease_expires_at
    keeper.start()
    try:
        for step in range(1, 8):  # a training loop: progress every 0.15 s
            assert keeper.progress(step) is None
            time.sleep(0.15)
        first = expiry()
        wait_until(lambda: expiry() > first, 5, "a renewal while steps advance")
        assert store.get_job(job.id).step == 7  # the keeper reports the step too
        with keeper.busy():  # an evaluation far longer than the stall limit
            during = expiry()
            wait_until(lambda: expiry() > during + timedelta(seconds=0.5), 5,
                       "renewals during long work")
        # No step and no long work for longer than `stall`: renewals stop, the lease runs out.
        wait_until(keeper.stalled, 5, "the keeper to see the stall")
        time.sleep(0.5)  # a renewal already under way when it stalled lands
        stalled_at = expiry()
        time.sleep(1.5)
        assert keeper.stalled() and expiry() == stalled_at
        # A cancel reaches the loop through the keeper (the loop itself never polls).
        keeper.progress(8)
        store.transition(job.id, JobStatus.running, JobStatus.cancelling)
        assert wait_until(lambda: keeper.progress(8), 5, "the cancel") == "cancel"
        store.transition(job.id, JobStatus.cancelling, JobStatus.cancelled)
        wait_until(lambda: keeper.reason == "lease-lost", 5, "the lost lease")
    finally:
        keeper.close()
        store.close()


SLOW_METRIC = '''
import time

from gand.api import Metric, MetricProtocol
from gand.hookspecs import hookimpl


class Slow(Metric):
    name = "slow"
    help = "sleeps for a while, as a large FID does"
    directions = {"slow": "min"}
    headline = "slow"

    def protocol(self, ctx):
        return MetricProtocol(None, ctx.num_samples, ctx.reference)

    def compute(self, ctx):
        time.sleep(float(__import__("os").environ["SLOW_METRIC_SECONDS"]))
        return {"slow": 1.0}


@hookimpl
def gand_register_metrics():
    return [Slow]
'''


def test_an_evaluation_longer_than_two_leases_keeps_the_job(gand, tmp_path):
    g = gand
    site = fake_dist(tmp_path / "site", "gand_slow_metric", SLOW_METRIC)
    lease = float(g.env["GAND_LEASE_SECONDS"])
    g.env["PYTHONPATH"] = os.pathsep.join([str(site), g.env.get("PYTHONPATH", "")])
    g.env["SLOW_METRIC_SECONDS"] = str(2.5 * lease)
    job_id = g.submit("gan", "--data", "ring8", "--steps", "40", "--eval-every", "20",
                      "--eval-metric", "slow", "--sample-every", "0")
    started = time.monotonic()
    g.worker().wait(timeout=300)
    store = store_for(g)
    job = store.get_job(job_id)
    assert job.status == JobStatus.succeeded and job.step == 40, (job.error, g.worker_log())
    assert time.monotonic() - started > 2 * 2.5 * lease  # both evaluations really took that long
    assert [e.step for e in store.evaluations(job_id, "slow")] == [20, 40]
    assert job.recoveries == 0 and job.epoch == 1
    assert all(e.to_status not in (JobStatus.recovering, JobStatus.queued)
               for e in store.events(job_id)[1:]), [e.to_json() for e in store.events(job_id)]
    store.close()


def test_a_job_stored_before_configs_had_a_version_loads_and_resumes(gand, gand_inprocess):
    """A row written the old way: a schema at 0002, a config without `version`, an old file name."""
    g = gand
    job_id = gand_inprocess.json("submit", "gan", "--data", "ring8", "--steps", "30",
                                 "--checkpoint-every", "30", "--seed", "2")["id"]
    g.worker().wait(timeout=300)
    store = store_for(g)
    (c,) = [c for c in store.checkpoints(job_id) if c.step == 30]
    old_path = (g.home / c.path).with_name("step_00000030.pt")
    (g.home / c.path).rename(old_path)
    # Rewrite the row as gand 0.1 stored it: no version, no epoch (the migration's default 0).
    from sqlalchemy import update

    from gand.store.models import Checkpoint, Job, Metric

    with store.session() as s:
        row = s.get(Job, job_id)
        old = dict(row.config)
        del old["version"]
        row.config, row.epoch = old, 0
        s.get(Checkpoint, c.id).path = str(old_path)
        s.execute(update(Metric).where(Metric.job_id == job_id).values(epoch=0))
    assert "version" not in store.get_job(job_id).config

    shown = gand_inprocess.json("show", job_id)
    assert shown["status"] == "succeeded" and shown["epoch"] == 0
    resumed = gand_inprocess.json("resume", job_id, "--steps", "45")
    assert resumed["from_step"] == 30
    g.worker().wait(timeout=300)
    job = store.get_job(job_id)
    assert job.status == JobStatus.succeeded and job.step == 45, (job.error, g.worker_log())
    assert job.epoch == 1 and "version" not in job.config  # the row is read, not rewritten
    steps = [m.step for m in store.metrics(job_id, "g_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 45 and 31 in steps
    store.close()


@pytest.mark.parametrize("args", [["list", "--json"], ["show", "JOB", "--json"],
                                  ["show", "JOB"], ["follow", "JOB", "--json"],
                                  ["cancel", "JOB"], ["config", "--json"],
                                  ["data", "list", "--json"], ["--help"], ["list", "--help"]])
def test_read_only_commands_import_neither_torch_nor_the_plugins(gand, gand_inprocess, args):
    import json
    import subprocess
    import sys

    job_id = gand_inprocess.json("submit", "gan", "--data", "ring8", "--steps", "5")["id"]
    if args[0] == "follow":  # a finished job, so that follow returns
        gand_inprocess.ok("cancel", job_id)
    args = [job_id if a == "JOB" else a for a in args]
    code = ("import json, sys\n"
            "from gand.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'numpy', 'gand_plugins', 'gand_workers', 'celery'))\n"
            "print('\\n' + json.dumps({'rc': rc, 'heavy': heavy}))\n")
    p = subprocess.run([sys.executable, "-c", code, *args], env=dict(gand.env), cwd=gand.home,
                       capture_output=True, text=True, timeout=120)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["rc"] in (0, None, 1), p.stderr  # follow of a cancelled job exits 1
    assert result["heavy"] == [], f"gand {' '.join(args)} imported {result['heavy'][:5]}"
