"""Runs one job on this worker: claim it under a fenced lease, train it, record how it ended.

The database decides: a message for a job that is not `queued` is dropped, and the claim is a
compare-and-set that hands out a new epoch, so two workers handed the same message can never
both run it, and a worker that lost its lease can never write for the job again.
"""
from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from gand import settings as settings_mod
from gand.engine import checkpoint as ckpt
from gand.engine import faults
from gand.engine.trainer import Diverged, Hooks, Outcome, Run, train
from gand.errors import CheckpointError, GandError
from gand.evaluation import run as evaluation
from gand.jobs import checkpoints
from gand.jobs import config as jobcfg
from gand.jobs.lease import LeaseKeeper
from gand.jobs.service import JobService, JobWriter
from gand.plugins import Registry
from gand.store import JobStatus
from gand.store.fence import LeaseLost
from gand_workers.resources import JobPeaks

log = logging.getLogger("gand.worker")


@dataclass
class WorkerContext:
    """What a worker process sets up once and every job it runs shares."""

    settings: settings_mod.Settings
    jobs: JobService
    registry: Registry
    name: str
    stopping: threading.Event  # set on SIGTERM/SIGINT: checkpoint, requeue, exit
    me: Any = None             # gand_workers.worker.Identity: queues, GPUs, variants


_memory_capped = False


def cap_gpu_memory() -> None:
    """--jobs-per-gpu K: this process may use 1/K of its GPU (set once, before any job)."""
    global _memory_capped
    fraction = os.environ.get("GAND_GPU_MEMORY_FRACTION")
    if _memory_capped or not fraction:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(float(fraction), 0)
    _memory_capped = True


def run_job(ctx: WorkerContext, writer: JobWriter) -> str:
    """Runs the job `writer` holds the lease of; returns what happened, for the log."""
    job, job_id = writer.job, writer.job_id
    cap_gpu_memory()
    log.info("running job %s (%s on %s, epoch %d)", job_id, job.variant, ",".join(job.data),
             writer.lease.epoch)
    keeper = LeaseKeeper(writer.lease, writer.heartbeat)
    keeper.start()
    try:
        outcome = _train(ctx, writer, keeper)
    except LeaseLost:
        outcome = Outcome("lease-lost", writer.job.step)
    except (Diverged, GandError) as e:
        return writer.finish(JobStatus.failed, reason=str(e), error=str(e))
    except Exception as e:  # a bug in a plugin or in gand: keep the traceback in the log
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        msg = f"{type(e).__name__}: {e}"
        return writer.finish(JobStatus.failed, reason=msg, error=msg)
    finally:
        keeper.close()
    return _conclude(writer, outcome)


def _train(ctx: WorkerContext, writer: JobWriter, keeper: LeaseKeeper) -> Outcome:
    config = writer.config
    run_dir = ctx.settings.run_dir(writer.job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    peaks = JobPeaks()  # before anything of this job is loaded
    run = Run.build(config, ctx.registry)
    if run.runtime is not None:
        writer.record_runtime(run.runtime.to_dict())
    peaks.watch(run.device)
    start = _restore_latest(writer, run, writer.job.step)
    if start >= config.steps:
        return Outcome("completed", start)
    epoch = writer.lease.epoch
    if peaks.caveat:
        writer.note(peaks.caveat)

    def report(rows: list, step: int) -> None:
        # Peak memory rides along with every batched flush: a job killed mid-run keeps its last.
        writer.report(rows + peaks.rows(step), step)

    def save_checkpoint(step: int, state: dict) -> None:
        # Called in the trainer's background writer thread with a host copy of the state.
        # The epoch in the name: a stale owner's file can never replace or be pruned as ours.
        path = run_dir / "checkpoints" / ckpt.file_name(step, epoch)
        writer.check()  # no file at all once the lease is lost
        with keeper.busy():
            nbytes, digest = ckpt.save(path, state)
        try:
            writer.checkpoint(step, path, nbytes, digest)
        except LeaseLost:
            path.unlink(missing_ok=True)  # ours, never recorded: nobody else may rely on it
            raise
        writer.prune_checkpoints(config.keep_checkpoints)

    periodic = evaluation.periodic(writer.store, writer.job, lambda: run, ctx.registry,
                                   ctx.name, log, fence=writer.lease)

    def evaluate(step: int) -> None:
        with keeper.busy():  # an evaluation may take many leases: it is progress all the same
            periodic(step)

    def tick(step: int) -> Optional[str]:
        reason = keeper.progress(step)
        if reason:
            return reason
        return "shutdown" if ctx.stopping.is_set() else None

    hooks = Hooks(tick=tick, report=report, checkpoint=save_checkpoint,
                  artifact=writer.artifact, evaluate=evaluate, tag=f"e{epoch}", note=writer.note)
    rollbacks = 0
    while True:
        try:
            with faults.for_job(writer.job_id):
                return train(run, run_dir, hooks, start)
        except Diverged as e:
            if config.on_diverge != "rollback" or rollbacks >= jobcfg.MAX_ROLLBACKS:
                if rollbacks:
                    raise GandError(f"{e}; gave up after {rollbacks} rollbacks") from None
                raise
            rollbacks += 1
            run, start = _rollback(ctx, writer, e, rollbacks)


def _rollback(ctx: WorkerContext, writer: JobWriter, e: Diverged, n: int) -> tuple[Run, int]:
    """A fresh Run from the latest valid checkpoint with its learning rates halved."""
    run = Run.build(writer.config, ctx.registry)
    start = _restore_latest(writer, run, e.step)
    factor = jobcfg.ROLLBACK_LR_FACTOR ** n
    for opt in run.models.optimizers.values():
        for group in opt.param_groups:
            # From the checkpoint's rate, so n rollbacks to one checkpoint give factor**n.
            group["lr"] *= factor
    writer.note(f"{e}; rollback {n} of {jobcfg.MAX_ROLLBACKS}: restored step {start} with "
                f"learning rate ×{factor:g}")
    log.warning("job %s: %s; rolled back to step %d (lr ×%g)", writer.job_id, e, start, factor)
    return run, start


def _restore_latest(writer: JobWriter, run: Run, progressed: int) -> int:
    """Loads the newest checkpoint that verifies (the test `gand resume` applies); its step.

    `progressed` is the step the job had reached. If it had checkpoints but none verifies, the
    job fails with the reason rather than training again from step 0 unasked (`gand resume
    --from-scratch` does that on request). If it never recorded one (its worker died before
    the first), it starts again at step 0, and its step is set back to say so.
    """
    rows = writer.store.checkpoints(writer.job_id)
    problems: list[str] = []

    def skipped(c, e: CheckpointError) -> None:
        log.warning("job %s: skipping checkpoint at step %d: %s", writer.job_id, c.step, e)
        writer.note(f"skipped checkpoint at step {c.step}: {e}")
        problems.append(f"step {c.step}: {e}")

    usable = checkpoints.latest_usable(
        rows, lambda c: ckpt.load(writer.settings.local_path(c.path), c.sha256,
                                   map_location=run.device), skipped)
    if usable is not None:
        step = run.restore(usable[1])
        log.info("job %s: resumed from step %d", writer.job_id, step)
        return step
    if rows and progressed > 0:
        raise checkpoints.none_usable(writer.job_id, progressed, problems)
    if progressed > 0:
        writer.reset_progress(f"no checkpoint was recorded before step {progressed}; "
                              f"training again from step 0")
    return 0


def _conclude(writer: JobWriter, outcome: Outcome) -> str:
    if outcome.reason == "completed":
        return writer.finish(JobStatus.succeeded, reason="completed", step=outcome.step)
    if outcome.reason == "cancel":
        return writer.finish(JobStatus.cancelled, reason="cancelled by user", step=outcome.step)
    if outcome.reason == "shutdown":
        # Not a failure: the job goes back to the queue and continues from this checkpoint.
        return writer.hand_back(outcome.step)
    log.warning("%s: lease lost at step %d; leaving the job to its new owner", writer.lease,
                outcome.step)
    return "lease-lost"
