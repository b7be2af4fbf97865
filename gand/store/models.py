"""The tables gand keeps: jobs, their status history, metrics, checkpoints and artifacts.

The database holds paths and summaries, never tensors. Schema changes go through a new migration
under migrations/versions; tests check that the migrations and these models agree.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        MetaData, String, Text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from gand.store.states import JobStatus


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid4().hex


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zones: it would store the wall-clock digits of whatever zone it is given
    and hand back naive values. Normalising to UTC on the way in keeps stored values comparable
    (lease expiry is a `<` in SQL) and tagging UTC on the way out keeps Python comparisons legal.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: gand stores timezone-aware UTC only")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class StatusType(TypeDecorator):
    """jobs.status as plain text in the database and a JobStatus in Python."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: JobStatus | str | None, dialect: Any) -> str | None:
        return None if value is None else JobStatus(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> JobStatus | None:
        return None if value is None else JobStatus(value)


class MetricValue(TypeDecorator):
    """A float whose NaN survives SQLite, which would turn it into NULL and break NOT NULL.

    A diverging GAN reports NaN losses and that is worth keeping, so NaN is stored as NULL on
    every backend (the same on both) and read back as NaN.
    """

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Any) -> float | None:
        return None if value is None or math.isnan(value) else float(value)

    def process_result_value(self, value: float | None, dialect: Any) -> float:
        return math.nan if value is None else value


# Named constraints let later migrations alter them, SQLite batch mode included.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _job_fk() -> Mapped[str]:
    return mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)


class Job(Base):
    __tablename__ = "jobs"
    # A worker claims the best queued job: highest priority first, then the oldest.
    __table_args__ = (Index("ix_jobs_queue_order", "status", "priority", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str | None] = mapped_column(String)
    variant: Mapped[str] = mapped_column(String)
    loss: Mapped[str] = mapped_column(String)
    data: Mapped[list[str]] = mapped_column(JSON)  # dataset spec strings, as submitted
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[JobStatus] = mapped_column(StatusType(), index=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String, default="gand")
    priority: Mapped[int] = mapped_column(Integer, default=5, server_default="5")  # 0-9
    worker: Mapped[str | None] = mapped_column(String)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recoveries: Mapped[int] = mapped_column(Integer, default=0)
    # The fencing token: incremented by every claim; a worker writes only while it matches.
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status} step {self.step}/{self.total_steps}>"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "variant": self.variant, "loss": self.loss,
            "data": self.data, "config": self.config, "status": self.status.value,
            "step": self.step, "total_steps": self.total_steps, "queue": self.queue,
            "priority": self.priority,
            "worker": self.worker, "lease_expires_at": _iso(self.lease_expires_at),
            "recoveries": self.recoveries, "epoch": self.epoch, "error": self.error,
            "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
        }


class Event(Base):
    """One status change of a job: the status history is data, not log text."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = _job_fk()
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    from_status: Mapped[JobStatus | None] = mapped_column(StatusType())  # None: submitted
    to_status: Mapped[JobStatus] = mapped_column(StatusType())
    worker: Mapped[str | None] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"<Event {self.id} job {self.job_id} {self.from_status}->{self.to_status}>"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "job_id": self.job_id, "time": _iso(self.time),
            "from_status": self.from_status.value if self.from_status else None,
            "to_status": self.to_status.value, "worker": self.worker, "reason": self.reason,
        }


class Metric(Base):
    __tablename__ = "metrics"
    # Serves both "one key's curve" and "latest value per key" for a job.
    __table_args__ = (Index("ix_metrics_job_id_key_step", "job_id", "key", "step"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(MetricValue(), nullable=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The attempt (the claim's epoch) that trained this step; a resumed job re-trains steps, and
    # readers show each step's value from the attempt that last trained it.
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def __repr__(self) -> str:
        return f"<Metric job {self.job_id} step {self.step} {self.key}={self.value}>"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "job_id": self.job_id, "step": self.step, "key": self.key,
                "value": self.value, "time": _iso(self.time), "epoch": self.epoch}


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = _job_fk()
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)

    def __repr__(self) -> str:
        best = " best" if self.is_best else ""
        return f"<Checkpoint {self.id} job {self.job_id} step {self.step}{best}>"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "job_id": self.job_id, "step": self.step, "path": self.path,
                "bytes": self.bytes, "sha256": self.sha256, "time": _iso(self.time),
                "is_best": self.is_best}


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = _job_fk()
    step: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String)  # "samples", "plot", ...
    path: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<Artifact {self.id} job {self.job_id} {self.kind} step {self.step}>"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "job_id": self.job_id, "step": self.step, "kind": self.kind,
                "path": self.path, "time": _iso(self.time)}


class Dataset(Base):
    """A name for a dataset spec (`gand data add faces ./faces`), usable in `--data`."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<Dataset {self.name} = {self.spec}>"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "created_at": _iso(self.created_at)}


class Evaluation(Base):
    """One evaluated value (FID, coverage...) with the protocol that produced it."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = _job_fk()
    step: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String)        # the metric plugin, e.g. "fid"
    key: Mapped[str] = mapped_column(String)           # the value's name, e.g. "fid", "modes"
    value: Mapped[float] = mapped_column(MetricValue(), nullable=True)
    extractor: Mapped[str | None] = mapped_column(String)   # feature extractor, if any
    num_samples: Mapped[int | None] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(Text)     # the reference set it compared to
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<Evaluation job {self.job_id} step {self.step} {self.key}={self.value}>"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "job_id": self.job_id, "step": self.step, "metric": self.metric,
                "key": self.key, "value": self.value, "extractor": self.extractor,
                "num_samples": self.num_samples, "reference": self.reference,
                "time": _iso(self.time)}


class Worker(Base):
    """One worker process of the fleet, as it last reported itself (its heartbeat)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # gand-PID@HOST
    host: Mapped[str] = mapped_column(String)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    queues: Mapped[list[str]] = mapped_column(JSON)
    # [{"index", "uuid", "name", "memory_mb"}] of the GPUs it may use (empty: a CPU worker).
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    variants: Mapped[list[str]] = mapped_column(JSON)  # the variants its plugins provide
    slot: Mapped[str | None] = mapped_column(String)  # "gpu0/2": slot 2 of GPU 0; None: CPU
    job_id: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # idle, busy, stopped

    def to_json(self, lost_after: float | None = None) -> dict[str, Any]:
        state = self.state
        if state != "stopped" and lost_after is not None and \
                (utcnow() - self.last_seen).total_seconds() > lost_after:
            state = "lost"
        return {"worker": self.name, "host": self.host, "pid": self.pid,
                "started_at": _iso(self.started_at), "last_seen": _iso(self.last_seen),
                "queues": self.queues, "gpus": self.gpus, "variants": self.variants,
                "slot": self.slot, "job": self.job_id, "state": state}

