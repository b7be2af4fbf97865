"""The job service: every operation on a job's life, for every front end and for the workers.

The CLI's commands only parse arguments and print what these return; the workers claim, write
and finish through them; the web dashboard calls the same methods. The store decides (every
status change is a compare-and-set), the broker only wakes a worker.

Reading (list, show, follow) needs neither torch nor the plugins nor Celery: those are imported
by the operations that need them, so that `gand list` answers in a fraction of a second.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from gand import settings as settings_mod
from gand.errors import BrokerUnavailable, NotFound, StateError, TransitionRejected, UsageError
from gand.jobs import pace
from gand.jobs.config import MAX_STEPS, JobConfig
from gand.jobs.lease import lease_seconds
from gand.store import ACTIVE, TERMINAL, Artifact, Job, JobStatus, Store, parse_status
from gand.store.fence import Lease, LeaseLost

if TYPE_CHECKING:  # only for annotations: importing these costs torch
    from gand.engine.trainer import Run
    from gand.plugins import Registry

log = logging.getLogger("gand.jobs")

FOLLOW_POLL_SECONDS = 0.5
LOST_AFTER_LEASES = 3  # a worker silent for this many leases shows as lost
QUEUE_SCAN = 200       # queued jobs a worker looks through for one it can run


def short(job_id: str) -> str:
    return job_id[:12]


@dataclass(frozen=True)
class Resumed:
    job: Job
    from_step: int          # the step the worker starts from (its checkpoint's, or 0)
    total_steps: int
    forgot_checkpoints: int = 0  # --from-scratch: checkpoints no longer used


class JobService:
    """Jobs as the front ends and the workers see them, over one store and one broker."""

    def __init__(self, settings: Optional[settings_mod.Settings] = None,
                 store: Optional[Store] = None):
        self.settings = settings or settings_mod.load()
        self._store = store
        self._latest: dict[str, tuple[tuple, dict[str, float]]] = {}
        self._noted: set[tuple[str, str]] = set()  # hand-back events this process recorded

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # --- reading ----------------------------------------------------------------------------

    def find(self, ref: str) -> Job:
        """The job whose id is `ref` or the only one that starts with it."""
        return self.store.find_job(ref)

    def list(self, status: Optional[str] = None) -> list[Job]:
        """Jobs, newest first; only those in `status` (as the user typed it) if given."""
        return self.store.list_jobs(parse_status(status) if status else None)

    @staticmethod
    def config(job: Job) -> JobConfig:
        """The job's typed config, at its current total (a resume may have raised it)."""
        return JobConfig.from_dict(job.config).with_steps(job.total_steps)

    def show(self, ref: str) -> dict[str, Any]:
        """Everything known about a job, in the shape of `gand show --json`.

        A queued job also gets `queue_position` (1: the next its queue hands out) and
        `waiting_for`: why no live worker can take it (a missing plugin or resource), or None.
        """
        s = self.store
        job = s.find_job(ref)
        data = job.to_json()
        if job.status == JobStatus.queued:
            order = [j.id for j in s.queued_jobs([job.queue])]
            data["queue_position"] = order.index(job.id) + 1 if job.id in order else None
            data["waiting_for"] = self.waiting_reason(job)
        data["metrics"] = s.latest_metrics(job.id)
        # Paths as this host sees them (the store keeps them relative to the artifacts root).
        local = self.settings.local_path
        data["checkpoints"] = [{**c.to_json(), "path": str(local(c.path))}
                               for c in s.checkpoints(job.id)]
        data["artifacts"] = [{**a.to_json(), "path": str(local(a.path))}
                             for a in s.artifacts(job.id)]
        data["events"] = [e.to_json() for e in s.events(job.id)]
        data["evaluations"] = [e.to_json() for e in s.evaluations(job.id)]
        return data

    def progress(self, job_id: str) -> dict[str, Any]:
        """A job's status, step, latest metrics and estimated seconds left (`eta_s`, None
        unless it is running): one frame of `follow`."""
        j = self.store.get_job(job_id)
        metrics = self.store.latest_metrics(j.id)
        state = {"id": j.id, "status": j.status.value, "step": j.step,
                 "total_steps": j.total_steps, "metrics": metrics,
                 "eta_s": pace.eta_seconds(j.status.value, j.step, j.total_steps, metrics,
                                           pace.batch_size(j.config))}
        if j.status in TERMINAL:
            samples = [str(self.settings.local_path(a.path))
                       for a in self.store.artifacts(j.id) if a.kind == "samples"]
            state.update(error=j.error, samples=samples[-1] if samples else None)
        return state

    def summaries(self) -> list[dict[str, Any]]:
        """Every job as `gand list --json` shows it, with its latest metrics, `eta_s` and, for
        a queued job, `queue_position` (1: the next a worker takes): a jobs board."""
        jobs = self.list()
        position = {j.id: i for i, j in enumerate(self.queue_order(), 1)}
        rows = []
        for j in jobs:
            metrics = self._latest_metrics(j)
            rows.append({**j.to_json(), "metrics": metrics, "queue_position": position.get(j.id),
                         "eta_s": pace.eta_seconds(j.status.value, j.step, j.total_steps,
                                                   metrics, pace.batch_size(j.config))})
        return rows

    def _latest_metrics(self, job: Job) -> dict[str, float]:
        # A job's metrics change only with a write that also moves its updated_at, so a board
        # polled every second re-reads only the jobs that trained since the last poll.
        key = (job.id, job.updated_at, job.epoch)
        cached = self._latest.get(job.id)
        if cached is None or cached[0] != key:
            cached = (key, self.store.latest_metrics(job.id))
            self._latest[job.id] = cached
        return cached[1]

    def artifact_file(self, artifact_id: int) -> tuple[Artifact, Path]:
        """An artifact recorded in the store and the file it names, which must be a regular
        file inside the runs folder of the artifacts root once symlinks are resolved; NotFound
        otherwise, so that nothing but recorded run files can be read through this."""
        if not 0 < artifact_id < 2**63:
            raise NotFound(f"no artifact {artifact_id}")
        artifact = self.store.artifact(artifact_id)
        root = self.settings.runs.resolve()
        try:
            path = self.settings.local_path(artifact.path).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            raise NotFound(f"artifact {artifact_id}: its file is gone") from None
        if not path.is_relative_to(root) or not path.is_file():
            raise NotFound(f"artifact {artifact_id}: its file is not under {root}")
        return artifact, path

    def follow(self, ref: str, poll: float = FOLLOW_POLL_SECONDS) -> Iterator[dict[str, Any]]:
        """Yields a job's progress each time it changes, until (and including) its final state."""
        job_id = self.find(ref).id
        last = None
        while True:
            state = self.progress(job_id)
            if state != last:
                yield state
                last = state
            if JobStatus(state["status"]) in TERMINAL:
                return
            time.sleep(poll)

    def workers(self) -> list[dict[str, Any]]:
        """The fleet from the worker registry: every worker process with its host, pid,
        queues, GPUs, job and state (idle, busy, stopped, or lost: no heartbeat for
        LOST_AFTER_LEASES leases). Reads the database only: fast, and the same on every host."""
        lost_after = LOST_AFTER_LEASES * lease_seconds()
        return [w.to_json(lost_after) for w in self.store.workers()]

    def waiting_reason(self, job: Job) -> Optional[str]:
        """Why no live worker can run this queued job, or None (see gand.jobs.placement)."""
        from gand.jobs.placement import waiting_reason

        return waiting_reason(self.workers(), job.queue, job.variant, self.config(job))

    def queue_order(self) -> list[Job]:
        """Queued jobs in the order workers take them (priority, then submit time)."""
        return self.store.queued_jobs()

    # --- changing ---------------------------------------------------------------------------

    def submit(self, registry: "Registry", *, name: Optional[str] = None,
               named_datasets: Optional[Callable[[], dict[str, str]]] = None,
               **options: Any) -> Job:
        """Validates a job (jobspec.build_config's options), records it and queues it.

        Everything is checked before anything is written; if the broker refuses the message,
        the job row is removed again, so a failed submit leaves nothing behind.
        """
        from gand import queue
        from gand.jobspec import build_config

        if name is not None and (not name.strip() or len(name) > 200 or not name.isprintable()):
            raise UsageError(f"--name {name!r} is invalid; expected 1-200 printable characters")
        config = build_config(registry, named=named_datasets or self.named_datasets, **options)
        queue.check_broker()  # before writing anything: no job is left behind for a dead broker
        job = self.store.create_job(variant=config.variant, loss=config.loss,
                                    data=[d.spec for d in config.data], config=config.to_dict(),
                                    total_steps=config.steps, queue=config.queue, name=name,
                                    priority=config.priority)
        try:
            queue.enqueue(job.id, job.queue)
        except BrokerUnavailable:
            self.store.delete_job(job.id)
            raise
        return job

    def named_datasets(self) -> dict[str, str]:
        return {d.name: d.spec for d in self.store.list_datasets()}

    def cancel(self, ref: str) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop (its worker
        checkpoints and records `cancelled` within about a second)."""
        s = self.store
        j = s.find_job(ref)
        if j.status == JobStatus.queued:
            return s.transition(j.id, JobStatus.queued, JobStatus.cancelled,
                                reason="cancelled by user")
        if j.status == JobStatus.running:
            # The worker and its lease stay: it is the one that stops the job.
            return s.transition(j.id, JobStatus.running, JobStatus.cancelling, worker=j.worker,
                                reason="cancel requested", lease_expires_at=j.lease_expires_at)
        if j.status == JobStatus.cancelling:
            return j  # already on its way
        raise StateError(f"job {short(j.id)} is {j.status.value}; only queued or running jobs "
                         f"can be cancelled")

    def resume(self, ref: str, steps: Optional[int] = None,
               from_scratch: bool = False) -> Resumed:
        """Queues a stopped job again. It continues from its newest checkpoint that verifies —
        checked here exactly as the worker checks it, so the step returned is the step the
        worker starts from — or, with `from_scratch`, from step 0 without its checkpoints.
        A job that had progressed but has no checkpoint that verifies is refused."""
        from gand import queue
        from gand.engine import checkpoint as ckpt  # torch: the worker's own test, exactly
        from gand.jobs import checkpoints

        s = self.store
        j = s.find_job(ref)
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise UsageError(f"--steps {steps} is invalid; expected an integer from 1 to "
                             f"{MAX_STEPS}")
        total = j.total_steps if steps is None else steps
        if j.status in ACTIVE:
            lease = j.lease_expires_at
            now = datetime.now(timezone.utc)
            if lease is not None and lease > now:
                # Its worker may be alive, or dead with its lease not yet run out: either way
                # the job is not ours to move now; say when it will be moved without us.
                raise StateError(
                    f"job {short(j.id)} is {j.status.value} on worker {j.worker}, whose lease "
                    f"runs until {lease:%H:%M:%S} UTC (in {(lease - now).total_seconds():.0f} s); "
                    f"if that worker has stopped, any worker (or `gand reap`) requeues the job "
                    f"then and it continues from its latest checkpoint; to stop it instead, "
                    f"`gand cancel {short(j.id)}`")
            reason = f"resumed after worker {j.worker} stopped renewing its lease"
        elif j.status in TERMINAL:
            reason = "resumed by user"
        else:
            raise StateError(f"job {short(j.id)} is {j.status.value}; nothing to resume")
        if from_scratch:
            reached = 0
        else:
            problems: list[str] = []
            rows = s.checkpoints(j.id)
            usable = checkpoints.latest_usable(
                rows, lambda c: ckpt.load(self.settings.local_path(c.path), c.sha256, map_location="cpu"),
                lambda c, e: problems.append(f"step {c.step}: {e}"))
            if usable is None and (rows or j.step > 0):
                raise checkpoints.none_usable(j.id, j.step, problems)
            reached = usable[0].step if usable is not None else 0
        if total <= reached:
            raise UsageError(f"job {short(j.id)} already reached step {reached}; pass --steps N "
                             f"with N > {reached} to train further")
        queue.check_broker()
        forgot = 0
        if from_scratch:
            j, forgot = s.requeue_from_scratch(
                j.id, j.status, total_steps=total,
                reason=f"{reason}, from scratch: step 0 of {total}, its checkpoints forgotten "
                       f"(files kept)")
        else:
            j = s.transition(j.id, j.status, JobStatus.queued, reason=reason, total_steps=total,
                             error=None)
        queue.enqueue(j.id, j.queue)
        return Resumed(j, reached, total, forgot)

    def reap(self, reaper: str, skip_worker: Optional[str] = None):
        """One reaper pass: requeues every job whose worker stopped renewing its lease (but
        those of `skip_worker`: a worker's own reaper knows its own jobs are not dead)."""
        from gand.jobs.reaper import reap

        return reap(self.store, reaper, skip_worker=skip_worker)

    # --- using a trained job ----------------------------------------------------------------

    def load_run(self, registry: "Registry", ref: str, which: str = "latest",
                 device: str = "cpu") -> tuple[Job, "Run", int]:
        """The job's models restored from one of its checkpoints, without loading its data."""
        from gand.engine import checkpoint as ckpt
        from gand.engine.trainer import Run

        s = self.store
        j = s.find_job(ref)
        cps = sorted(s.checkpoints(j.id), key=lambda c: c.step)
        if not cps:
            raise NotFound(f"job {short(j.id)} has no checkpoint yet")
        if which == "latest":
            chosen = cps[-1]
        elif which == "best":
            best = [c for c in cps if c.is_best]
            if not best:
                raise NotFound(f"job {short(j.id)} has no best checkpoint (submit with "
                               f"--best-by METRIC)")
            chosen = best[-1]
        elif which.isdigit():
            match = [c for c in cps if c.step == int(which)]
            if not match:
                raise NotFound(f"job {short(j.id)} has no checkpoint at step {which}; steps: "
                               f"{', '.join(str(c.step) for c in cps)}")
            chosen = match[0]
        else:
            raise UsageError(f"--checkpoint {which!r} is invalid; expected latest, best or a "
                             f"step number")
        run = Run.build(self.config(j), registry, device=device, load_data=False)
        run.restore(ckpt.load(self.settings.local_path(chosen.path), chosen.sha256,
                              map_location=run.device))
        return j, run, chosen.step

    # --- the worker's side ------------------------------------------------------------------

    def claim_next(self, worker: dict[str, Any], hint: Optional[str] = None
                   ) -> Optional["JobWriter"]:
        """Claims the best queued job `worker` (its registry row) can run: highest priority,
        then oldest, on its queues. The database decides which job runs; the message that woke
        the worker (`hint`, a job id) only said that there is work. A job this worker cannot
        run stays queued for one that can, with an event saying why (once per worker)."""
        from gand.jobs.placement import why_not

        for job in self.store.queued_jobs(worker["queues"], limit=QUEUE_SCAN):
            reason = why_not(worker, job.queue, job.variant, self.config(job))
            if reason is not None:
                self._hand_back(job, worker["worker"], reason)
                continue
            writer = self.claim(job.id, worker["worker"])
            if writer is not None:
                return writer
        if hint is not None:
            log.debug("woken for job %s, but no queued job is for %s", hint, worker["worker"])
        return None

    def next_for(self, worker: dict[str, Any]) -> Optional[Job]:
        """The queued job `worker` would claim next, without claiming it (or None)."""
        from gand.jobs.placement import why_not

        for job in self.store.queued_jobs(worker["queues"], limit=QUEUE_SCAN):
            if why_not(worker, job.queue, job.variant, self.config(job)) is None:
                return job
        return None

    def _hand_back(self, job: Job, worker: str, reason: str) -> None:
        note = f"handed back by {worker}: {reason}"
        # Once per worker and job: an idle worker looks at the queue every few seconds.
        if (job.id, note) in self._noted:
            return
        self._noted.add((job.id, note))
        if not any(e.reason == note for e in self.store.events(job.id)):
            try:
                self.store.note(job.id, note, worker)
            except NotFound:
                pass

    def claim(self, job_id: str, worker: str) -> Optional["JobWriter"]:
        """Takes a queued job for `worker`: a writer bound to the new lease, or None when the
        job is unknown or no longer queued (a re-delivered message, a claim elsewhere)."""
        s = self.store
        try:
            job = s.get_job(job_id)
        except NotFound:
            log.warning("dropping message for unknown job %s", job_id)
            return None
        if job.status != JobStatus.queued:
            log.info("dropping message for job %s: it is %s", job_id, job.status)
            return None
        try:
            job, lease = s.claim(job_id, worker, lease_seconds())
        except TransitionRejected:
            log.info("job %s was claimed elsewhere", job_id)
            return None
        return JobWriter(self, job, lease)


class JobWriter:
    """Everything a worker writes for the job it claimed, each write fenced by its lease.

    Once the lease is lost every method raises LeaseLost and nothing is written: the worker
    must stop the job's loop (see gand.store.fence).
    """

    def __init__(self, service: JobService, job: Job, lease: Lease):
        self.service, self.store, self.job, self.lease = service, service.store, job, lease
        self.settings = service.settings
        self.config = service.config(job)

    @property
    def job_id(self) -> str:
        return self.job.id

    def heartbeat(self, step: Optional[int] = None) -> Optional[JobStatus]:
        return self.store.heartbeat(self.lease, lease_seconds(), step)

    def check(self) -> None:
        self.store.check_lease(self.lease)

    def report(self, rows: list[tuple[int, str, float]], step: int) -> None:
        self.store.add_metrics(self.job_id, rows, step, fence=self.lease)

    def checkpoint(self, step: int, path: Path, nbytes: int, sha256: str):
        return self.store.add_checkpoint(self.job_id, step, self.settings.stored_path(path),
                                         nbytes, sha256, fence=self.lease)

    def prune_checkpoints(self, keep: int) -> None:
        """Deletes all but the newest `keep` checkpoints (0: keep all), never the best one."""
        if keep <= 0:
            return
        cps = sorted(self.store.checkpoints(self.job_id), key=lambda c: (c.step, c.id))
        for c in cps[:-keep]:
            if c.is_best:
                continue
            # Row first, fenced: a stale worker deletes nothing; a crash in between leaves a
            # stray file, never a row without its file.
            self.store.delete_checkpoint(c.id, fence=self.lease)
            self.settings.local_path(c.path).unlink(missing_ok=True)

    def artifact(self, kind: str, path: Path, step: Optional[int]) -> None:
        self.store.add_artifact(self.job_id, kind, self.settings.stored_path(path), step,
                                fence=self.lease)

    def note(self, reason: str) -> None:
        self.store.note(self.job_id, reason, self.lease.worker, fence=self.lease)

    def record_runtime(self, runtime: dict[str, Any]) -> None:
        """What the `auto` fast-path options became on this worker's device (config.runtime)."""
        self.store.record_runtime(self.job_id, runtime, fence=self.lease)

    def reset_progress(self, reason: str) -> None:
        """The job starts again at step 0 (it never recorded a checkpoint): its step says so."""
        self.store.reset_progress(self.lease, reason)

    def finish(self, to: JobStatus, *, reason: str, **fields: Any) -> str:
        """Records how the job ended; a lost lease records nothing."""
        # Only a job already asked to stop can become cancelled; success or failure ends either.
        expected = {JobStatus.cancelling} if to == JobStatus.cancelled else ACTIVE
        try:
            self.store.transition(self.job_id, expected, to, worker=self.lease.worker,
                                  reason=reason, fence=self.lease, **fields)
        except LeaseLost:
            log.warning("%s: not recording %s: the lease is lost", self.lease, to.value)
            return "lease-lost"
        except TransitionRejected as e:
            log.warning("job %s: could not record %s: %s", self.job_id, to.value, e)
        log.info("job %s %s: %s", self.job_id, to.value, reason)
        return to.value

    def hand_back(self, step: int) -> str:
        """The worker is shutting down: the job goes back to the queue at this checkpoint."""
        from gand import queue

        try:
            self.store.transition(self.job_id, JobStatus.running, JobStatus.queued,
                                  worker=self.lease.worker, fence=self.lease, step=step,
                                  reason=f"worker {self.lease.worker} shutting down; requeued "
                                         f"at step {step}")
        except LeaseLost:
            return "lease-lost"
        except TransitionRejected:  # cancelled meanwhile
            return self.finish(JobStatus.cancelled, reason="cancelled by user")
        queue.enqueue(self.job_id, self.job.queue)
        return "requeued"
