"""The first schema: jobs, job_events, metrics, checkpoints, artifacts.

Revision ID: 0001
Revises:
Create Date: 2024-11-26

Written out by hand rather than imported from the models, so that this revision keeps creating
exactly this schema however the models change later.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _job_fk(table: str) -> sa.Column:
    return sa.Column("job_id", sa.String(32),
                     sa.ForeignKey("jobs.id", name=f"fk_{table}_job_id_jobs", ondelete="CASCADE"),
                     nullable=False)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("variant", sa.String(), nullable=False),
        sa.Column("loss", sa.String(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("worker", sa.String(), nullable=True),
        _time("lease_expires_at", nullable=True),
        sa.Column("recoveries", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])

    op.create_table(
        "job_events",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        _job_fk("job_events"),
        _time("time"),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])

    op.create_table(
        "metrics",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        _job_fk("metrics"),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),  # NULL is a NaN the trainer reported
        _time("time"),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
    )
    op.create_index("ix_metrics_job_id_key_step", "metrics", ["job_id", "key", "step"])

    op.create_table(
        "checkpoints",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        _job_fk("checkpoints"),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _time("time"),
        sa.Column("is_best", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
    )
    op.create_index("ix_checkpoints_job_id", "checkpoints", ["job_id"])

    op.create_table(
        "artifacts",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        _job_fk("artifacts"),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        _time("time"),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
    )
    op.create_index("ix_artifacts_job_id", "artifacts", ["job_id"])


def downgrade() -> None:
    for table in ("artifacts", "checkpoints", "metrics", "job_events", "jobs"):
        op.drop_table(table)
