"""Resume never lies: what `gand resume` prints is what the worker does, and a job without a
checkpoint that verifies is refused (or, with --from-scratch, trained again from step 0), never
silently restarted. Real `gand worker --burst` processes; the CLI in this process.
"""
from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import cli, job_with_checkpoint

from gand.store import JobStatus
from gand.store.models import Job


def submit(g, *args: str) -> str:
    code, out, err = cli(g, "submit", *args, "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def run_burst(g) -> None:
    """One burst worker until the queue is empty."""
    w = g.worker()
    assert w.wait(timeout=240) == 0, g.worker_log()


def first_step_of_latest_attempt(store, job_id: str) -> int:
    rows = store.metrics(job_id, "g_loss", superseded=True)
    latest = max(r.epoch for r in rows)
    return min(r.step for r in rows if r.epoch == latest)


def queued_messages(g) -> int:
    folder = g.home / "broker" / "queue"
    return len(list(folder.iterdir())) if folder.exists() else 0


def refused(g, *args: str) -> str:
    """Runs a command that must be refused: one line, non-zero, nothing changed or queued."""
    store = g.store()
    before, messages = store.count_rows(), queued_messages(g)
    code, out, err = cli(g, *args)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("gand: error: "), (out, err)
    assert store.count_rows() == before and queued_messages(g) == messages
    return lines[0]


def test_resume_checks_checkpoints_as_the_worker_does(gand):
    """Run dir deleted, or every checkpoint corrupt: refused, offering --from-scratch. Latest
    corrupt: resume prints the step of the one before, and the worker starts right after it.
    --from-scratch: the worker trains from step 1 and the job's step starts again at 0."""
    g, store = gand, gand.store()
    job_id = submit(g, "gan", "--data", "gauss1d", "--steps", "300", "--checkpoint-every", "100",
                    "--sample-every", "0", "--seed", "1")
    run_burst(g)
    assert store.get_job(job_id).status == JobStatus.succeeded
    run_dir = g.home / "runs" / job_id
    backup = g.home / "backup"
    shutil.copytree(run_dir, backup)

    # The whole run folder is gone (rm -rf $GAND_HOME/runs/<id>).
    shutil.rmtree(run_dir)
    line = refused(g, "resume", job_id, "--steps", "400")
    assert "reached step 300 but has no checkpoint that verifies" in line
    assert "is missing" in line and f"gand resume {job_id[:12]} --from-scratch" in line
    assert store.get_job(job_id).status == JobStatus.succeeded

    # Every checkpoint corrupt (truncated).
    shutil.copytree(backup, run_dir)
    for c in store.checkpoints(job_id):
        (g.home / c.path).write_bytes((g.home / c.path).read_bytes()[:100])
    line = refused(g, "resume", job_id, "--steps", "400")
    assert "does not match its recorded sha256" in line and "--from-scratch" in line

    # Only the latest corrupt: resume says 200, and 200 is where the worker starts.
    shutil.rmtree(run_dir)
    shutil.copytree(backup, run_dir)
    latest = max(store.checkpoints(job_id), key=lambda c: c.step)
    (g.home / latest.path).write_bytes(b"not a checkpoint")
    code, out, err = cli(g, "resume", job_id, "--steps", "350", "--json")
    assert code == 0, err
    said = json.loads(out)
    assert said["from_step"] == 200 and said["total_steps"] == 350
    run_burst(g)
    job = store.get_job(job_id)
    assert job.status == JobStatus.succeeded and job.step == 350, job.error
    assert first_step_of_latest_attempt(store, job_id) == said["from_step"] + 1
    assert any("skipped checkpoint at step 300" in (e.reason or "") for e in store.events(job_id))

    # From scratch: back to step 0, checkpoints forgotten, trained from step 1.
    code, out, err = cli(g, "resume", job_id, "--from-scratch", "--steps", "60")
    assert code == 0 and "starts again from step 0 to 60" in out, err
    assert store.get_job(job_id).step == 0 and store.checkpoints(job_id) == []
    run_burst(g)
    job = store.get_job(job_id)
    assert job.status == JobStatus.succeeded and job.step == 60, job.error
    assert first_step_of_latest_attempt(store, job_id) == 1
    assert [c.step for c in store.checkpoints(job_id)] == [60]


def test_a_worker_never_restarts_a_progressed_job_silently(gand, registry):
    """Two jobs whose worker died (lease expired), recovered by `gand reap`: one had
    checkpoints that are all gone — the next worker fails it with the reason; one never wrote a
    checkpoint — the next worker trains it again from step 0 and its step says so."""
    g, store = gand, gand.store()
    assert cli(g, "list")[0] == 0
    gone = job_with_checkpoint(store, registry, g.home, data="gauss1d", step=30,
                               status="running")
    for c in store.checkpoints(gone):
        (g.home / c.path).unlink()
    never = submit(g, "gan", "--data", "gauss1d", "--steps", "60", "--checkpoint-every", "0",
                   "--sample-every", "0")
    job, lease = store.claim(never, "w-dead@host", 60)  # its message is dropped: not queued
    store.add_metrics(never, [(40, "g_loss", 0.5)], step=40, fence=lease)
    for job_id in (gone, never):  # their worker died: its lease ran out
        with store.session() as s:
            s.get(Job, job_id).lease_expires_at = datetime.now(UTC) - timedelta(seconds=5)
        j = store.get_job(job_id)
        assert j.status == JobStatus.running and j.step > 0
    code, out, err = cli(g, "reap")
    assert code == 0 and out.count("requeued") == 2, (out, err)
    run_burst(g)

    failed = store.get_job(gone)
    assert failed.status == JobStatus.failed
    assert "reached step 30 but has no checkpoint that verifies" in failed.error
    assert "--from-scratch" in failed.error
    assert not [m for m in store.metrics(gone, superseded=True) if m.epoch == failed.epoch]

    restarted = store.get_job(never)
    assert restarted.status == JobStatus.succeeded and restarted.step == 60, restarted.error
    assert any("no checkpoint was recorded before step 40; training again from step 0"
               in (e.reason or "") for e in store.events(never))
    assert first_step_of_latest_attempt(store, never) == 1


def test_resume_of_a_dead_workers_job_says_when_its_lease_runs_out(gand, registry):
    g, store = gand, gand.store()
    assert cli(g, "list")[0] == 0
    job_id = job_with_checkpoint(store, registry, g.home, data="gauss1d", step=20,
                                 status="running")
    line = refused(g, "resume", job_id)
    assert "is running on worker w-test@here, whose lease runs until" in line
    assert "any worker (or `gand reap`) requeues the job then" in line
    assert "cancel it first" not in line


@pytest.mark.parametrize("damage", ["missing", "fifo"])
def test_resume_verifies_without_opening_special_files(gand, registry, damage):
    """A checkpoint path that is now a FIFO is not usable (and reading it would hang)."""
    import os

    g, store = gand, gand.store()
    assert cli(g, "list")[0] == 0
    job_id = job_with_checkpoint(store, registry, g.home, data="gauss1d", step=20)
    path = g.home / store.checkpoints(job_id)[0].path
    path.unlink()
    if damage == "fifo":
        os.mkfifo(path)
    line = refused(g, "resume", job_id, "--steps", "30")
    assert ("is not a regular file" if damage == "fifo" else "is missing") in line


def test_resume_reads_checkpoints_as_the_worker_does(gand, registry):
    """A file whose sha256 matches its row but that torch cannot read (written by something
    other than gand): the worker would skip it, so resume does not promise it."""
    import hashlib

    g, store = gand, gand.store()
    assert cli(g, "list")[0] == 0
    job_id = job_with_checkpoint(store, registry, g.home, data="gauss1d", step=20)
    c = store.checkpoints(job_id)[0]
    garbage = b"not a torch file at all"
    Path(c.path).write_bytes(garbage)
    with store.session() as s:
        from gand.store.models import Checkpoint

        s.get(Checkpoint, c.id).sha256 = hashlib.sha256(garbage).hexdigest()
    line = refused(g, "resume", job_id, "--steps", "30")
    assert "cannot be read" in line and "--from-scratch" in line
