"""The job store: every read and write gand makes to its database goes through Store.

Methods open their own short transaction and return detached ORM objects, which keep their loaded
values after the session closes. Job status changes only in transition(), a compare-and-set.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from gand.errors import GandError, NotFound, TransitionRejected, UsageError, one_of
from gand.store import migrate
from gand.store.connect import (make_engine, remove_strays, retry_locked, sqlite_files,
                                store_errors)
from gand.store.fence import Lease, LeaseLost
from gand.store.values import INT32, check_storable
from gand.store.models import (Artifact, Checkpoint, Dataset, Evaluation, Event, Job, Metric,
                               Worker, utcnow)
from gand.store.states import ACTIVE, TERMINAL, JobStatus, check_transition

# What transition(**fields) may set besides the status; anything else is a caller's bug.
TRANSITION_FIELDS = frozenset(
    {"step", "error", "worker", "lease_expires_at", "recoveries", "total_steps", "config"})
# Re-reads when the status changes between our read and our compare-and-set; more means a loop.
CAS_ATTEMPTS = 5
HEX = re.compile(r"[0-9a-f]{1,32}")
TABLES = (Job, Event, Metric, Checkpoint, Artifact, Dataset, Evaluation, Worker)


class Store:
    """gand's database: jobs, their status history, metrics, checkpoints and artifacts."""

    def __init__(self, url: str) -> None:
        self.url = url
        created = [f for f in sqlite_files(url) if not f.exists()]
        try:
            self.engine = make_engine(url)
            with store_errors(url, "opening it"):
                migrate.upgrade(self.engine)
        except GandError:
            remove_strays(created)  # a failed open leaves no files behind (a -shm on a full disk)
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"<Store {self.engine.url!r}>"

    def close(self) -> None:
        """Closes pooled connections; a worker calls it before forking or exiting."""
        self.engine.dispose()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A database that cannot be reached or written raises StoreUnavailable (one line that
        names the URL and the reason), whichever method was using it.
        """
        with store_errors(self.url, "using it"), self._sessions.begin() as session:
            yield session

    # --- jobs -------------------------------------------------------------------------------

    @retry_locked
    def create_job(self, *, variant: str, loss: str, data: list[str], config: dict[str, Any],
                   total_steps: int, queue: str = "gand", name: str | None = None,
                   priority: int = 5) -> Job:
        """A new queued job, with its "submitted" event."""
        check_storable("total_steps", total_steps, INT32)
        check_storable("config", config)
        check_storable("data", data)
        for label, text in (("name", name), ("variant", variant), ("loss", loss), ("queue", queue)):
            check_storable(label, text)
        now = utcnow()
        job = Job(name=name, variant=variant, loss=loss, data=list(data), config=dict(config),
                  status=JobStatus.queued, step=0, total_steps=total_steps, queue=queue,
                  priority=priority, recoveries=0, created_at=now, updated_at=now)
        with self.session() as s:
            s.add(job)
            s.flush()  # the event's foreign key needs the job row first
            s.add(Event(job_id=job.id, time=now, from_status=None, to_status=JobStatus.queued,
                        reason="submitted"))
        return job

    @retry_locked
    def delete_job(self, job_id: str) -> None:
        """Removes a job and every row that refers to it (a submit whose message never left)."""
        with self.session() as s:
            _require_job(s, job_id)
            for table in (Event, Metric, Checkpoint, Artifact, Evaluation):
                s.execute(table.__table__.delete().where(table.job_id == job_id))
            s.execute(Job.__table__.delete().where(Job.id == job_id))

    def get_job(self, job_id: str) -> Job:
        with self.session() as s:
            return _job(s, job_id)

    def find_job(self, prefix: str) -> Job:
        """The job whose id is `prefix` or the only one that starts with it."""
        wanted = prefix.strip().lower()
        if not HEX.fullmatch(wanted):
            raise NotFound(f"no job {prefix!r}: job ids are hexadecimal")
        with self.session() as s:
            jobs = s.scalars(select(Job).where(Job.id.startswith(wanted))
                             .order_by(Job.id).limit(6)).all()
        if not jobs:
            raise NotFound(f"no job {prefix!r}")
        if len(jobs) > 1:
            shown = ", ".join(j.id for j in jobs[:5]) + (", ..." if len(jobs) > 5 else "")
            raise UsageError(f"job prefix {prefix!r} is ambiguous: matches {shown}; "
                             "give more characters")
        return jobs[0]

    def list_jobs(self, status: JobStatus | None = None) -> list[Job]:
        """Jobs, newest first; only those in `status` if given."""
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
        if status is not None:
            query = query.where(Job.status == status)
        with self.session() as s:
            return list(s.scalars(query))

    @retry_locked
    def transition(self, job_id: str, expected: JobStatus | Iterable[JobStatus], to: JobStatus,
                   *, worker: str | None = None, reason: str | None = None,
                   expired_before: datetime | None = None, fence: Lease | None = None,
                   **fields: Any) -> Job:
        """Moves a job from one of `expected` to `to`, or raises TransitionRejected.

        `worker` names who made the move (recorded in the event) and becomes the job's worker
        when it enters running. Leaving running/cancelling releases the worker and its lease
        unless `fields` set them. `fields` may set: step, error, worker, lease_expires_at,
        recoveries, total_steps, config. With `expired_before`, the move also requires the
        job's lease to have run out before that time, so a reaper never takes a job whose
        worker renewed its lease after the reaper looked. With `fence`, the move also requires
        the job to still be that lease's (same worker, same epoch): LeaseLost otherwise.
        """
        allowed = _as_set(expected)
        check_transition(allowed, to)
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise ValueError(f"transition cannot set {one_of(unknown)}; "
                             f"allowed: {one_of(TRANSITION_FIELDS)}")
        for key in ("step", "total_steps", "recoveries"):
            if key in fields:
                check_storable(key, fields[key], INT32)
        if "config" in fields:
            check_storable("config", fields["config"])
        with self.session() as s:
            for _ in range(CAS_ATTEMPTS):
                seen = s.scalar(select(Job.status).where(Job.id == job_id))
                if seen is None:
                    raise NotFound(f"no job {job_id!r}")
                if fence is not None and s.scalar(
                        select(Job.id).where(*_fence_clause(fence))) is None:
                    raise LeaseLost(fence)  # whatever its status, no longer this lease's to move
                if seen not in allowed:
                    raise TransitionRejected(
                        f"job {job_id}: expected {one_of(allowed)} but it is {seen}")
                now = utcnow()
                values = _transition_values(seen, to, now, worker, fields)
                # The compare-and-set. It compares with the status just read, not with all of
                # `expected`, so that the event's from_status is exactly what was replaced.
                where = [Job.id == job_id, Job.status == seen]
                if expired_before is not None:
                    where.append(Job.lease_expires_at < expired_before)
                if fence is not None:
                    where += [Job.worker == fence.worker, Job.epoch == fence.epoch]
                result = s.execute(update(Job).where(*where).values(**values)
                                   .execution_options(synchronize_session=False))
                if result.rowcount != 1 and fence is not None:
                    raise LeaseLost(fence)
                if result.rowcount != 1 and expired_before is not None and s.scalar(
                        select(Job.status).where(Job.id == job_id)) == seen:
                    raise TransitionRejected(f"job {job_id}: its lease was renewed")
                if result.rowcount == 1:
                    s.add(Event(job_id=job_id, time=now, from_status=seen, to_status=to,
                                worker=worker, reason=reason))
                    return s.scalars(select(Job).where(Job.id == job_id)
                                     .execution_options(populate_existing=True)).one()
            # Still moving under us after several reads: report the last state we saw.
            raise TransitionRejected(f"job {job_id}: expected {one_of(allowed)} but it is "
                                     f"{s.scalar(select(Job.status).where(Job.id == job_id))}")

    @retry_locked
    def requeue_from_scratch(self, job_id: str, expected: JobStatus, *, total_steps: int,
                             reason: str) -> tuple[Job, int]:
        """`expected` → queued at step 0, its checkpoints forgotten: (the job, how many).

        The one way a job's step goes back (elsewhere it only grows), in one transaction with
        the move, so no worker can claim the job in between and find it at its old step with
        no checkpoint. The checkpoint files stay on disk; only their rows go, so the worker
        cannot continue from them.
        """
        check_transition({expected}, JobStatus.queued)
        check_storable("total_steps", total_steps, INT32)
        with self.session() as s:
            now = utcnow()
            values = _transition_values(expected, JobStatus.queued, now, None,
                                        {"total_steps": total_steps, "error": None})
            values["step"] = 0  # not _at_least: this is the explicit reset
            result = s.execute(update(Job).where(Job.id == job_id, Job.status == expected)
                               .values(**values).execution_options(synchronize_session=False))
            if result.rowcount != 1:
                seen = s.scalar(select(Job.status).where(Job.id == job_id))
                if seen is None:
                    raise NotFound(f"no job {job_id!r}")
                raise TransitionRejected(f"job {job_id}: expected {expected} but it is {seen}")
            forgot = s.execute(Checkpoint.__table__.delete().where(
                Checkpoint.job_id == job_id)).rowcount
            s.add(Event(job_id=job_id, time=now, from_status=expected, to_status=JobStatus.queued,
                        reason=reason))
            return s.scalars(select(Job).where(Job.id == job_id)
                             .execution_options(populate_existing=True)).one(), forgot

    @retry_locked
    def reset_progress(self, lease: Lease, reason: str) -> None:
        """Sets the leased job's step back to 0 with an event: its worker found no checkpoint
        at all and trains it again from the start (so the job never shows a step it is not at)."""
        now = utcnow()
        with self.session() as s:
            _fence(s, lease, lease.job_id)
            s.execute(update(Job).where(Job.id == lease.job_id).values(step=0, updated_at=now)
                      .execution_options(synchronize_session=False))
            status = s.scalar(select(Job.status).where(Job.id == lease.job_id))
            s.add(Event(job_id=lease.job_id, time=now, from_status=status, to_status=status,
                        worker=lease.worker, reason=reason))

    @retry_locked
    def claim(self, job_id: str, worker: str, lease_seconds: float) -> tuple[Job, Lease]:
        """queued → running for `worker`, with a new epoch: the job and the lease to write under.

        Raises TransitionRejected when the job is not queued (claimed elsewhere, cancelled).
        """
        job = self.transition(job_id, JobStatus.queued, JobStatus.running, worker=worker,
                              reason="claimed", lease_expires_at=utcnow() + timedelta(
                                  seconds=lease_seconds))
        return job, Lease(job.id, worker, job.epoch)

    @retry_locked
    def heartbeat(self, lease: Lease, lease_seconds: float,
                  step: int | None = None) -> JobStatus | None:
        """Renews a lease: the job's status now, or None if the lease is lost.

        A worker sees a cancel request here as the status cancelling.
        """
        now = utcnow()
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds),
                                  "updated_at": now}
        if step is not None:
            values["step"] = _at_least(step)
        with self.session() as s:
            result = s.execute(update(Job).where(*_fence_clause(lease)).values(**values)
                               .execution_options(synchronize_session=False))
            if result.rowcount != 1:
                return None
            return s.scalar(select(Job.status).where(Job.id == lease.job_id))

    def check_lease(self, lease: Lease) -> None:
        """Raises LeaseLost unless `lease` still holds (before a costly write, such as a file)."""
        with self.session() as s:
            _fence(s, lease, lease.job_id)

    def queued_jobs(self, queues: Iterable[str] | None = None, limit: int = 1000) -> list[Job]:
        """Queued jobs in the order workers take them: highest priority, then oldest first."""
        query = select(Job).where(Job.status == JobStatus.queued)
        if queues is not None:
            query = query.where(Job.queue.in_(list(queues)))
        query = query.order_by(Job.priority.desc(), Job.created_at, Job.id).limit(limit)
        with self.session() as s:
            return list(s.scalars(query))

    # --- the worker registry ----------------------------------------------------------------

    @retry_locked
    def register_worker(self, *, name: str, host: str, pid: int, queues: list[str],
                        gpus: list[dict[str, Any]], variants: list[str],
                        slot: str | None = None) -> Worker:
        """Records a worker process as it starts (a restarted one replaces its old row)."""
        now = utcnow()
        with self.session() as s:
            row = s.get(Worker, name) or Worker(name=name)
            row.host, row.pid, row.queues, row.gpus = host, pid, list(queues), list(gpus)
            row.variants, row.slot, row.job_id, row.state = sorted(variants), slot, None, "idle"
            row.started_at = row.last_seen = now
            s.add(row)
        return row

    @retry_locked
    def worker_seen(self, name: str, *, state: str | None = None,
                    job_id: str | None | type = ...) -> None:
        """A worker's heartbeat: last_seen now, and its state and job when they changed.

        "stopped" is final: a heartbeat that was in flight when its worker stopped (its fleet
        thread slow to end on a loaded machine) must not bring the row back to "idle"."""
        values: dict[str, Any] = {"last_seen": utcnow()}
        if state is not None:
            values["state"] = state
        if job_id is not ...:
            values["job_id"] = job_id
        where = [Worker.name == name]
        if state != "stopped":
            where.append(Worker.state != "stopped")
        with self.session() as s:
            s.execute(update(Worker).where(*where).values(**values)
                      .execution_options(synchronize_session=False))

    def workers(self) -> list[Worker]:
        with self.session() as s:
            return list(s.scalars(select(Worker).order_by(Worker.host, Worker.name)))

    @retry_locked
    def forget_workers(self, before: datetime) -> int:
        """Deletes stopped or long-lost workers last seen before `before`; returns how many."""
        with self.session() as s:
            return s.execute(Worker.__table__.delete().where(Worker.last_seen < before)).rowcount

    def expired_leases(self, now: datetime | None = None) -> list[Job]:
        """Jobs a worker holds whose lease ran out before `now`: their worker is presumed dead."""
        now = now or utcnow()
        with self.session() as s:
            return list(s.scalars(select(Job).where(Job.status.in_(list(ACTIVE)),
                                                    Job.lease_expires_at < now)
                                  .order_by(Job.lease_expires_at)))

    def events(self, job_id: str) -> list[Event]:
        """A job's status history, oldest first."""
        with self.session() as s:
            return list(s.scalars(select(Event).where(Event.job_id == job_id)
                                  .order_by(Event.time, Event.id)))

    # --- metrics ----------------------------------------------------------------------------

    @retry_locked
    def add_metrics(self, job_id: str, rows: list[tuple[int, str, float]],
                    step: int | None = None, *, fence: Lease | None = None) -> None:
        """Records (step, key, value) rows in one bulk insert, and the job's progress if `step`.

        The rows carry the fence's epoch (the attempt); the job's step only ever grows.
        """
        now = utcnow()
        with self.session() as s:
            _require_job(s, job_id)
            _fence(s, fence, job_id)
            epoch = fence.epoch if fence is not None else s.scalar(
                select(Job.epoch).where(Job.id == job_id))
            if rows:
                s.execute(insert(Metric), [
                    {"job_id": job_id, "step": st, "key": k, "value": v, "time": now,
                     "epoch": epoch} for st, k, v in rows])
            if step is not None:
                s.execute(update(Job).where(Job.id == job_id)
                          .values(step=_at_least(step), updated_at=now)
                          .execution_options(synchronize_session=False))

    def metrics(self, job_id: str, key: str | None = None, *, superseded: bool = False,
                since: int | None = None) -> list[Metric]:
        """A job's metric rows by step: one series, each step from the attempt that last
        trained it; with `superseded`, also the rows of attempts that a resume went back on;
        with `since`, only the steps after it (what a live view has not seen yet)."""
        query = select(Metric).where(Metric.job_id == job_id)
        if key is not None:
            query = query.where(Metric.key == key)
        if since is not None:
            query = query.where(Metric.step > since)
        with self.session() as s:
            if not superseded:
                query = query.where(_live_metrics(s, job_id))
            return list(s.scalars(query.order_by(Metric.step, Metric.key, Metric.id)))

    def latest_metrics(self, job_id: str) -> dict[str, float]:
        """Each key's value at the greatest step it was reported for (by the live attempt)."""
        with self.session() as s:
            live = _live_metrics(s, job_id)
            last = (select(Metric.key, func.max(Metric.step).label("step"))
                    .where(Metric.job_id == job_id, live).group_by(Metric.key).subquery())
            query = (select(Metric.key, Metric.value)
                     .join(last, and_(Metric.key == last.c.key, Metric.step == last.c.step))
                     .where(Metric.job_id == job_id, live).order_by(Metric.epoch, Metric.id))
            # Ordered by id, so a value reported twice for one step ends as the later one.
            return {key: value for key, value in s.execute(query)}

    # --- checkpoints and artifacts ----------------------------------------------------------

    @retry_locked
    def add_checkpoint(self, job_id: str, step: int, path: str, nbytes: int,
                       sha256: str, *, fence: Lease | None = None) -> Checkpoint:
        with self.session() as s:
            _require_job(s, job_id)
            _fence(s, fence, job_id)
            checkpoint = Checkpoint(job_id=job_id, step=step, path=str(path), bytes=nbytes,
                                    sha256=sha256, time=utcnow(), is_best=False)
            s.add(checkpoint)
        return checkpoint

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self.session() as s:
            return list(s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)
                                  .order_by(Checkpoint.step, Checkpoint.id)))

    @retry_locked
    def delete_checkpoint(self, checkpoint_id: int, *, fence: Lease | None = None) -> None:
        """Forgets a checkpoint's row; deleting its file is the caller's business."""
        with self.session() as s:
            checkpoint = s.get(Checkpoint, checkpoint_id)
            if checkpoint is None:
                raise NotFound(f"no checkpoint {checkpoint_id!r}")
            _fence(s, fence, checkpoint.job_id)
            s.delete(checkpoint)

    @retry_locked
    def mark_best(self, job_id: str, checkpoint_id: int, *,
                  fence: Lease | None = None) -> Checkpoint:
        """Makes one checkpoint the job's best, and none of its others."""
        with self.session() as s:
            _fence(s, fence, job_id)
            checkpoint = s.get(Checkpoint, checkpoint_id)
            if checkpoint is None or checkpoint.job_id != job_id:
                raise NotFound(f"no checkpoint {checkpoint_id!r} for job {job_id!r}")
            s.execute(update(Checkpoint).where(Checkpoint.job_id == job_id)
                      .values(is_best=Checkpoint.id == checkpoint_id)
                      .execution_options(synchronize_session=False))
            checkpoint.is_best = True  # the row already says so; keep the returned copy in step
        return checkpoint

    @retry_locked
    def add_artifact(self, job_id: str, kind: str, path: str,
                     step: int | None = None, *, fence: Lease | None = None) -> Artifact:
        with self.session() as s:
            _require_job(s, job_id)
            _fence(s, fence, job_id)
            artifact = Artifact(job_id=job_id, kind=kind, path=str(path), step=step,
                                time=utcnow())
            s.add(artifact)
        return artifact

    def artifact(self, artifact_id: int) -> Artifact:
        """One artifact row by its id (NotFound if there is none)."""
        with self.session() as s:
            artifact = s.get(Artifact, artifact_id)
        if artifact is None:
            raise NotFound(f"no artifact {artifact_id!r}")
        return artifact

    def artifacts(self, job_id: str) -> list[Artifact]:
        with self.session() as s:
            return list(s.scalars(select(Artifact).where(Artifact.job_id == job_id)
                                  .order_by(Artifact.time, Artifact.id)))

    @retry_locked
    def note(self, job_id: str, reason: str, worker: str | None = None, *,
             fence: Lease | None = None) -> Event:
        """An event that changes no state (a skipped checkpoint, a collapse warning...)."""
        with self.session() as s:
            _fence(s, fence, job_id)
            status = _job(s, job_id).status
            event = Event(job_id=job_id, time=utcnow(), from_status=status, to_status=status,
                          worker=worker, reason=reason)
            s.add(event)
        return event

    @retry_locked
    def record_runtime(self, job_id: str, runtime: dict[str, Any], *, fence: Lease) -> None:
        """Stores in the job's config what its worker resolved the `auto` options to, so a
        reader sees what ran; a later start (another device) replaces it."""
        check_storable("config", runtime)
        with self.session() as s:
            _fence(s, fence, job_id)
            job = _job(s, job_id)
            # A new dict: the JSON column notices assignment, not mutation in place.
            job.config = {**job.config, "runtime": dict(runtime)}

    # --- evaluations ------------------------------------------------------------------------

    @retry_locked
    def add_evaluations(self, job_id: str, step: int, metric: str, values: dict[str, float], *,
                        extractor: str | None = None, num_samples: int | None = None,
                        reference: str | None = None,
                        fence: Lease | None = None) -> list[Evaluation]:
        """Records one metric's values at `step` with the protocol that produced them."""
        now = utcnow()
        rows = [Evaluation(job_id=job_id, step=step, metric=metric, key=k, value=float(v),
                           extractor=extractor, num_samples=num_samples, reference=reference,
                           time=now) for k, v in values.items()]
        with self.session() as s:
            _require_job(s, job_id)
            _fence(s, fence, job_id)
            s.add_all(rows)
        return rows

    def evaluations(self, job_id: str, key: str | None = None) -> list[Evaluation]:
        query = select(Evaluation).where(Evaluation.job_id == job_id)
        if key is not None:
            query = query.where(Evaluation.key == key)
        with self.session() as s:
            return list(s.scalars(query.order_by(Evaluation.step, Evaluation.key, Evaluation.id)))

    # --- named datasets ---------------------------------------------------------------------

    @retry_locked
    def add_dataset(self, name: str, spec: str) -> Dataset:
        with self.session() as s:
            if s.get(Dataset, name) is not None:
                raise UsageError(f"dataset name {name!r} is taken; remove it first or pick another")
            dataset = Dataset(name=name, spec=spec, created_at=utcnow())
            s.add(dataset)
        return dataset

    def get_dataset(self, name: str) -> Dataset | None:
        with self.session() as s:
            return s.get(Dataset, name)

    def list_datasets(self) -> list[Dataset]:
        with self.session() as s:
            return list(s.scalars(select(Dataset).order_by(Dataset.name)))

    @retry_locked
    def remove_dataset(self, name: str) -> None:
        with self.session() as s:
            dataset = s.get(Dataset, name)
            if dataset is None:
                known = [d.name for d in s.scalars(select(Dataset))]
                raise NotFound(f"no dataset named {name!r}; named datasets: {one_of(known)}")
            s.delete(dataset)

    def count_rows(self) -> dict[str, int]:
        """Rows per table, so a test can show that a refused command changed nothing."""
        with self.session() as s:
            return {model.__tablename__: s.scalar(select(func.count()).select_from(model))
                    for model in TABLES}


def _as_set(expected: JobStatus | Iterable[JobStatus]) -> frozenset[JobStatus]:
    if isinstance(expected, (JobStatus, str)):
        return frozenset({JobStatus(expected)})
    return frozenset(JobStatus(e) for e in expected)


def _transition_values(seen: JobStatus, to: JobStatus, now: datetime, worker: str | None,
                       fields: dict[str, Any]) -> dict[str, Any]:
    """The columns a move from `seen` to `to` writes, besides what the caller asked for."""
    values: dict[str, Any] = {"status": to, "updated_at": now}
    if to == JobStatus.running:
        # A claim: a new owner, so a new fencing token that every earlier owner's writes fail.
        values.update(started_at=now, worker=worker, epoch=Job.epoch + 1)
    if to in TERMINAL:
        values["finished_at"] = now
    elif seen in TERMINAL:
        values["finished_at"] = None  # resumed: it is no longer finished
    if to == JobStatus.queued:
        values["error"] = None  # a requeued job starts without the last run's error
    if seen in ACTIVE and to not in ACTIVE:
        values.update(worker=None, lease_expires_at=None)
    values.update(fields)
    if "step" in fields:
        values["step"] = _at_least(fields["step"])
    return values


def _at_least(step: int) -> Any:
    """SET step = max(step, :new): progress never goes back, whoever reports it late."""
    return case((Job.step < step, step), else_=Job.step)


def _fence_clause(lease: Lease) -> list[Any]:
    return [Job.id == lease.job_id, Job.worker == lease.worker, Job.epoch == lease.epoch,
            Job.status.in_(list(ACTIVE))]


def _fence(session: Session, lease: Lease | None, job_id: str) -> None:
    """Raises LeaseLost unless `lease` (when given) still owns the job, inside this transaction.

    It is an UPDATE rather than a SELECT so that it takes the job row's write lock: a reaper
    or a new claim cannot move the job between this check and the write that follows it.
    """
    if lease is None:
        return
    if lease.job_id != job_id:
        raise ValueError(f"{lease} does not cover job {job_id}")
    result = session.execute(update(Job).where(*_fence_clause(lease)).values(updated_at=utcnow())
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise LeaseLost(lease)


def _live_metrics(session: Session, job_id: str) -> Any:
    """The rows of a job's metrics that are its one series.

    A job resumed from a checkpoint at step S re-trains S+1… under a new epoch, so a row of
    epoch e is superseded once any later epoch reported a step at or before it.
    """
    firsts = session.execute(select(Metric.epoch, func.min(Metric.step))
                             .where(Metric.job_id == job_id).group_by(Metric.epoch)).all()
    conditions, cutoff = [], None
    for epoch, first in sorted(firsts, reverse=True):
        conditions.append(Metric.epoch == epoch if cutoff is None
                          else and_(Metric.epoch == epoch, Metric.step < cutoff))
        cutoff = first if cutoff is None else min(cutoff, first)
    return or_(*conditions) if len(conditions) > 1 else true()


def _job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def _require_job(session: Session, job_id: str) -> None:
    if session.scalar(select(Job.id).where(Job.id == job_id)) is None:
        raise NotFound(f"no job {job_id!r}")
