"""The jobs table: one row per study hpo runs, with its state and the lease of its owner."""

from __future__ import annotations

import enum
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hpo.errors import HpoError
from hpo.schema import jobs


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"


FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Job:
    id: int
    study_name: str
    spec: str
    state: JobState
    owner: str | None
    lease_expires_at: datetime | None
    message: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row) -> Job:
        data = dict(row._mapping)
        data["state"] = JobState(data["state"])
        return cls(**data)


class Jobs:
    """Data access for the jobs table. Every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, study_name: str, spec_json: str) -> Job:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    jobs.insert().values(
                        study_name=study_name, spec=spec_json, state=JobState.QUEUED,
                        created_at=now, updated_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            raise HpoError(f"a study named {study_name!r} already exists in this store") from None
        return self.get(study_name)

    def get(self, study_name: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(jobs.select().where(jobs.c.study_name == study_name)).first()
        return Job.from_row(row) if row else None

    def all(self) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(jobs.select().order_by(jobs.c.id)).all()
        return [Job.from_row(r) for r in rows]

    def claim(self, study_name: str, owner: str, lease_s: float) -> bool:
        """Take the job if it is waiting, or if its owner's lease expired. True when we got it."""
        now = utcnow()
        claimable = sa.or_(
            jobs.c.state.in_([JobState.QUEUED, JobState.INTERRUPTED]),
            sa.and_(jobs.c.state == JobState.RUNNING, jobs.c.lease_expires_at < now),
        )
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.study_name == study_name, claimable)
                .values(
                    state=JobState.RUNNING, owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                    started_at=sa.func.coalesce(jobs.c.started_at, now), updated_at=now, message=None,
                )
            )
        return result.rowcount == 1

    def renew(self, study_name: str, owner: str, lease_s: float) -> bool:
        """Extend our lease; False means we lost the job (someone else took it over)."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.study_name == study_name, jobs.c.owner == owner, jobs.c.state == JobState.RUNNING)
                .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
            )
        return result.rowcount == 1

    def finish(self, study_name: str, owner: str, state: JobState, message: str | None = None) -> None:
        now = utcnow()
        values = dict(state=state, message=message, lease_expires_at=None, updated_at=now)
        if state in FINISHED:
            values["finished_at"] = now
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update().where(jobs.c.study_name == study_name, jobs.c.owner == owner).values(**values)
            )
