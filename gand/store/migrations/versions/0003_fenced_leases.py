"""Fenced leases: a claim epoch on each job, and the attempt (epoch) on each metric row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows get 0: jobs never claimed under fencing, metrics of the first attempt.
    op.add_column("jobs", sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("metrics", sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("epoch")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("epoch")
