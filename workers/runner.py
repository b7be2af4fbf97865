"""Runs one job on this worker: claim it, train it, record how it ended.

The database decides: a message for a job that is not `queued` is dropped, and the claim is a
compare-and-set, so two workers handed the same message can never both run it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from gand import queue, settings as settings_mod
from gand.engine import checkpoint as ckpt
from gand.evaluation import run as evaluation
from gand.engine.trainer import Diverged, Hooks, Outcome, Run, train
from gand.errors import CheckpointError, GandError, NotFound, TransitionRejected
from gand.plugins import Registry
from gand.store import ACTIVE, JobStatus, Store

log = logging.getLogger("gand.worker")


DEFAULT_KEEP_CHECKPOINTS = 5  # --keep-checkpoints: the newest K are kept, plus the best
MAX_ROLLBACKS = 3             # --on-diverge rollback: restores before the job fails
ROLLBACK_LR_FACTOR = 0.5      # each rollback halves the learning rates again


def lease_seconds() -> float:
    # Short enough that a dead worker's job is found quickly, long enough to ride out a slow
    # checkpoint write; the loop renews it about once a second.
    return float(os.environ.get("GAND_LEASE_SECONDS", "30"))


def lease_until() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=lease_seconds())


@dataclass
class WorkerContext:
    """What a worker process sets up once and every job it runs shares."""

    settings: settings_mod.Settings
    store: Store
    registry: Registry
    name: str
    stopping: threading.Event  # set on SIGTERM/SIGINT: checkpoint, requeue, exit


def run_job(ctx: WorkerContext, job_id: str) -> str:
    """Runs `job_id` if it is still queued; returns what happened, for the log."""
    store = ctx.store
    try:
        job = store.get_job(job_id)
    except NotFound:
        log.warning("dropping message for unknown job %s", job_id)
        return "dropped"
    if job.status != JobStatus.queued.value:
        log.info("dropping message for job %s: it is %s", job_id, job.status)
        return "dropped"
    try:
        job = store.transition(job_id, JobStatus.queued, JobStatus.running, worker=ctx.name,
                               reason="claimed", lease_expires_at=lease_until())
    except TransitionRejected:
        log.info("job %s was claimed elsewhere", job_id)
        return "dropped"
    log.info("running job %s (%s on %s)", job_id, job.variant, ",".join(d for d in job.data))
    try:
        outcome = _train(ctx, job)
    except Diverged as e:
        return _finish(ctx, job_id, JobStatus.failed, reason=str(e), error=str(e))
    except GandError as e:
        return _finish(ctx, job_id, JobStatus.failed, reason=str(e), error=str(e))
    except Exception as e:  # a bug in a plugin or in gand: keep the traceback in the log
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        msg = f"{type(e).__name__}: {e}"
        return _finish(ctx, job_id, JobStatus.failed, reason=msg, error=msg)
    return _conclude(ctx, job_id, outcome)


def _train(ctx: WorkerContext, job) -> Outcome:
    config = dict(job.config)
    config["steps"] = job.total_steps  # resume may have raised the total
    run_dir = ctx.settings.run_dir(job.id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    _check_allowed(ctx, config)
    run = Run.build(config, ctx.registry)
    start = _restore_latest(ctx, job.id, run)
    if start >= job.total_steps:
        return Outcome("completed", start)
    keep = int(config.get("keep_checkpoints", DEFAULT_KEEP_CHECKPOINTS))

    def on_checkpoint(step: int, path: Path, n: int, sha: str) -> None:
        ctx.store.add_checkpoint(job.id, step, str(path), n, sha)
        prune_checkpoints(ctx.store, job.id, keep)

    def tick(step: int) -> Optional[str]:
        status = ctx.store.heartbeat(job.id, ctx.name, lease_seconds(), step)
        if status is None:
            return "lease-lost"
        if status == JobStatus.cancelling:
            return "cancel"
        if ctx.stopping.is_set():
            return "shutdown"
        return None

    hooks = Hooks(
        tick=tick,
        report=lambda rows, step: ctx.store.add_metrics(job.id, rows, step),
        checkpoint=on_checkpoint,
        artifact=lambda kind, path, step: ctx.store.add_artifact(job.id, kind, str(path), step),
        # Metrics every --eval-every steps: values, best checkpoint, collapse warnings (events).
        evaluate=evaluation.periodic(ctx.store, job, lambda: run, ctx.registry, ctx.name, log),
    )
    rollbacks = 0
    while True:
        try:
            return train(run, run_dir, hooks, start)
        except Diverged as e:
            if config.get("on_diverge", "fail") != "rollback" or rollbacks >= MAX_ROLLBACKS:
                if rollbacks:
                    raise GandError(f"{e}; gave up after {rollbacks} rollbacks") from None
                raise
            rollbacks += 1
            run, start = _rollback(ctx, job, config, e, rollbacks)


def _rollback(ctx: WorkerContext, job, config: dict, e: Diverged, n: int) -> tuple[Run, int]:
    """A fresh Run from the latest valid checkpoint with its learning rates halved."""
    run = Run.build(config, ctx.registry)
    start = _restore_latest(ctx, job.id, run)
    factor = ROLLBACK_LR_FACTOR ** n
    for opt in run.models.optimizers.values():
        for group in opt.param_groups:
            # From the checkpoint's rate, so n rollbacks to one checkpoint give factor**n.
            group["lr"] *= factor
    ctx.store.note(job.id, f"{e}; rollback {n} of {MAX_ROLLBACKS}: restored step {start} with "
                           f"learning rate ×{factor:g}", worker=ctx.name)
    log.warning("job %s: %s; rolled back to step %d (lr ×%g)", job.id, e, start, factor)
    return run, start


def _check_allowed(ctx: WorkerContext, config: dict) -> None:
    """Refuses a job that needs a plugin this worker's GAND_PLUGINS allowlist leaves out."""
    allow = ctx.settings.plugins
    if allow and config["variant"] not in ctx.registry.variants:
        raise GandError(f"variant {config['variant']!r} is not available on worker {ctx.name}: "
                        f"GAND_PLUGINS allows only {', '.join(allow)}")


def prune_checkpoints(store: Store, job_id: str, keep: int) -> None:
    """Deletes all but the newest `keep` checkpoints (0: keep all), never the best one."""
    if keep <= 0:
        return
    cps = sorted(store.checkpoints(job_id), key=lambda c: (c.step, c.id))
    for c in cps[:-keep]:
        if c.is_best:
            continue
        # Row first: a crash in between leaves a stray file, never a row without its file.
        store.delete_checkpoint(c.id)
        Path(c.path).unlink(missing_ok=True)


def _restore_latest(ctx: WorkerContext, job_id: str, run: Run) -> int:
    """Loads the newest checkpoint that verifies; returns its step (0 when there is none)."""
    for c in sorted(ctx.store.checkpoints(job_id), key=lambda c: c.step, reverse=True):
        try:
            state = ckpt.load(Path(c.path), c.sha256, map_location=run.device)
        except CheckpointError as e:
            log.warning("job %s: skipping checkpoint at step %d: %s", job_id, c.step, e)
            ctx.store.note(job_id, f"skipped checkpoint at step {c.step}: {e}", worker=ctx.name)
            continue
        step = run.restore(state)
        log.info("job %s: resumed from step %d", job_id, step)
        return step
    return 0


def _conclude(ctx: WorkerContext, job_id: str, outcome: Outcome) -> str:
    if outcome.reason == "completed":
        return _finish(ctx, job_id, JobStatus.succeeded, reason="completed", step=outcome.step)
    if outcome.reason == "cancel":
        return _finish(ctx, job_id, JobStatus.cancelled, reason="cancelled by user", step=outcome.step)
    if outcome.reason == "shutdown":
        # Not a failure: the job goes back to the queue and continues from this checkpoint.
        try:
            ctx.store.transition(job_id, JobStatus.running, JobStatus.queued, worker=ctx.name,
                                 reason=f"worker {ctx.name} shutting down; requeued at step "
                                        f"{outcome.step}", step=outcome.step)
        except TransitionRejected:  # cancelled meanwhile
            return _finish(ctx, job_id, JobStatus.cancelled, reason="cancelled by user")
        queue.enqueue(job_id, ctx.store.get_job(job_id).queue)
        return "requeued"
    log.warning("job %s: lease lost at step %d; leaving it to its new owner", job_id, outcome.step)
    return "lease-lost"


def _finish(ctx: WorkerContext, job_id: str, to: JobStatus, *, reason: str, **fields) -> str:
    # Only a job already asked to stop can become cancelled; success or failure ends either.
    expected = {JobStatus.cancelling} if to == JobStatus.cancelled else ACTIVE
    try:
        ctx.store.transition(job_id, expected, to, worker=ctx.name, reason=reason, **fields)
    except TransitionRejected as e:
        log.warning("job %s: could not record %s: %s", job_id, to.value, e)
    log.info("job %s %s: %s", job_id, to.value, reason)
    return to.value
