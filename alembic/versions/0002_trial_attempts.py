"""trial attempts: one row per attempt of a trial, with its owner and lease

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_trial_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_name", sa.String(512), nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("retry_of", sa.Integer, nullable=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("study_name", "trial_number", name="uq_hpo_trial_attempts_trial"),
    )
    op.create_index("ix_hpo_trial_attempts_owner_state", "hpo_trial_attempts", ["owner", "state"])


def downgrade() -> None:
    op.drop_index("ix_hpo_trial_attempts_owner_state", table_name="hpo_trial_attempts")
    op.drop_table("hpo_trial_attempts")
