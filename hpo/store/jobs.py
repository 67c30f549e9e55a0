"""The jobs table: one row per study hpo runs, with its state and the lease of its owner."""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hpo.errors import HpoError
from hpo.store.schema import jobs


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
    crashes: int = 0
    not_before: datetime | None = None

    @classmethod
    def from_row(cls, row: sa.Row) -> Job:
        data = dict(row._mapping)
        data["state"] = JobState(data["state"])
        return cls(**data)


MAX_CRASHES = 3  # driver crashes after which a study is FAILED instead of claimed again
CRASH_BACKOFF_S = 10.0  # the first crash's wait before the next claim; doubled per crash


class Jobs:
    """Data access for the jobs table. Every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._readable: list[sa.Column] | None = None

    def _select(self):
        """SELECT of the job columns the table has: a store whose hpo tables predate a migration
        (read by `hpo list` before anything upgraded it) is still readable."""
        if self._readable is None:
            present = {c["name"] for c in sa.inspect(self.engine).get_columns(jobs.name)}
            self._readable = [c for c in jobs.c if c.name in present]
        return sa.select(*self._readable)

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
            row = conn.execute(self._select().where(jobs.c.study_name == study_name)).first()
        return Job.from_row(row) if row else None

    def all(self) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._select().order_by(jobs.c.id)).all()
        return [Job.from_row(r) for r in rows]

    @staticmethod
    def _claimable(now: datetime):
        return sa.or_(
            sa.and_(jobs.c.state.in_([JobState.QUEUED, JobState.INTERRUPTED]),
                    sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now)),
            sa.and_(jobs.c.state == JobState.RUNNING, jobs.c.lease_expires_at < now),
        )

    def _take(self, conn, job_filter, owner: str, lease_s: float, now: datetime) -> bool:
        result = conn.execute(
            jobs.update()
            .where(job_filter, self._claimable(now))
            .values(
                state=JobState.RUNNING, owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                started_at=sa.func.coalesce(jobs.c.started_at, now), updated_at=now, message=None,
            )
        )
        return result.rowcount == 1

    def claim(self, study_name: str, owner: str, lease_s: float) -> bool:
        """Take the job if it is waiting, or if its owner's lease expired. True when we got it."""
        now = utcnow()
        with self.engine.begin() as conn:
            return self._take(conn, jobs.c.study_name == study_name, owner, lease_s, now)

    def claim_next(self, owner: str, lease_s: float, *, skip: Collection[str] = ()) -> Job | None:
        """Take the oldest claimable job, if any, except the studies in ``skip`` (those the caller
        runs already: a lease it renewed late must not make it start a second driver of its own).

        On PostgreSQL and MySQL/MariaDB the candidate row is locked with FOR UPDATE SKIP LOCKED,
        so replicas polling at the same time pick different jobs instead of queueing on one row;
        the conditional UPDATE is what makes a claim exclusive on every database.
        """
        now = utcnow()
        query = sa.select(jobs.c.id).where(self._claimable(now)).order_by(jobs.c.id).limit(1)
        if skip:
            query = query.where(jobs.c.study_name.not_in(list(skip)))
        if self.engine.dialect.name in ("postgresql", "mysql", "mariadb"):
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
            if row is None or not self._take(conn, jobs.c.id == row.id, owner, lease_s, now):
                return None
            found = conn.execute(self._select().where(jobs.c.id == row.id)).first()
        return Job.from_row(found)

    def renew(self, study_name: str, owner: str, lease_s: float) -> JobState | None:
        """Extend our lease. None while we hold it; else the job's state now (e.g. CANCELLED, or
        RUNNING under another owner who took it over)."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.study_name == study_name, jobs.c.owner == owner, jobs.c.state == JobState.RUNNING)
                .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
            )
            if result.rowcount == 1:
                return None
            state = conn.execute(sa.select(jobs.c.state).where(jobs.c.study_name == study_name)).scalar()
        return JobState(state) if state else JobState.CANCELLED

    def set_state(self, study_name: str, state: JobState, *, allowed_from: set[JobState],
                  message: str | None = None, spec_json: str | None = None) -> bool:
        """Move a job to ``state`` if it is in one of ``allowed_from``; True when it moved."""
        now = utcnow()
        values = dict(state=state, updated_at=now, message=message)
        if state == JobState.QUEUED:  # a user queued it (again): its crash count starts afresh
            values.update(owner=None, lease_expires_at=None, finished_at=None, crashes=0, not_before=None)
        if state in FINISHED:
            values.update(finished_at=now)
        if spec_json is not None:
            values["spec"] = spec_json
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.study_name == study_name, jobs.c.state.in_([s.value for s in allowed_from]))
                .values(**values)
            )
        return result.rowcount == 1

    def delete(self, study_name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(jobs.delete().where(jobs.c.study_name == study_name))

    def finish(self, study_name: str, owner: str, state: JobState, message: str | None = None) -> None:
        """Record how our run of the job ended and release the lease (a no-op if we lost it)."""
        now = utcnow()
        values = dict(state=state, message=message, lease_expires_at=None, updated_at=now)
        if state in FINISHED:
            values["finished_at"] = now
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.study_name == study_name, jobs.c.owner == owner, jobs.c.state == JobState.RUNNING)
                .values(**values)
            )

    def crashed(self, study_name: str, owner: str, error: str, *, max_crashes: int = MAX_CRASHES,
                backoff_s: float | None = None) -> JobState | None:
        """Record that our driver of the job crashed (an error that is not a trial's), and release
        it: INTERRUPTED, claimable again after a backoff that doubles per crash, or FAILED with the
        error once it crashed ``max_crashes`` times, so one poison study cannot crash-loop a serve.
        Returns the job's new state (None if we no longer held it)."""
        now = utcnow()
        with self.engine.begin() as conn:
            crashes = conn.execute(
                sa.select(jobs.c.crashes).where(jobs.c.study_name == study_name, jobs.c.owner == owner,
                                                jobs.c.state == JobState.RUNNING)
            ).scalar()
            if crashes is None:
                return None
            crashes += 1
            if crashes >= max_crashes:
                state, not_before = JobState.FAILED, None
                message = f"its driver crashed {crashes} times; last: {error}"
            else:
                state = JobState.INTERRUPTED
                wait = (CRASH_BACKOFF_S if backoff_s is None else backoff_s) * 2 ** (crashes - 1)
                not_before = now + timedelta(seconds=wait)
                message = f"its driver crashed ({crashes} of {max_crashes}; retried after {wait:g} s): {error}"
            values = dict(state=state, message=message[:2000], lease_expires_at=None, updated_at=now,
                          crashes=crashes, not_before=not_before)
            if state in FINISHED:
                values["finished_at"] = now
            conn.execute(
                jobs.update()
                .where(jobs.c.study_name == study_name, jobs.c.owner == owner, jobs.c.state == JobState.RUNNING)
                .values(**values)
            )
        return state
