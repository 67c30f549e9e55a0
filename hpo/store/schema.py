"""hpo's own tables (Optuna keeps its own). Changed only together with a migration in alembic/.

Timestamps are naive UTC.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

VERSION_TABLE = "hpo_alembic_version"  # Optuna's migrations use `alembic_version`

jobs = sa.Table(
    "hpo_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(512), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("started_at", sa.DateTime(), nullable=True),
    sa.Column("finished_at", sa.DateTime(), nullable=True),
    # Crashes of the study's driver (an error in hpo or its libraries, not in a trial) since it
    # was last queued by a user; after a crash it is not claimed before `not_before` (backoff).
    sa.Column("crashes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("not_before", sa.DateTime(), nullable=True),
    sa.UniqueConstraint("study_name", name="uq_hpo_jobs_study_name"),
    sa.Index("ix_hpo_jobs_state", "state"),
)


# One row per attempt of a trial: a retry is a new Optuna trial (same parameters) whose row
# points at the trial it retries. The owner renews the lease of its running attempts.
trial_attempts = sa.Table(
    "hpo_trial_attempts",
    metadata,
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
    sa.Index("ix_hpo_trial_attempts_owner_state", "owner", "state"),
)
