"""Named datasets and evaluations (metric values with their protocol).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_datasets"),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32),
                  sa.ForeignKey("jobs.id", name="fk_evaluations_job_id_jobs", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("extractor", sa.String(), nullable=True),
        sa.Column("num_samples", sa.Integer(), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
    )
    op.create_index("ix_evaluations_job_id", "evaluations", ["job_id"])


def downgrade() -> None:
    op.drop_table("evaluations")
    op.drop_table("datasets")
