"""The driver's single seam for writing to the store: every Optuna and attempt write goes here.

Two properties live here rather than in the scheduling logic:

* Outages. Each write is retried with backoff while the database is unreachable (a restart,
  a fail-over), so the driver pauses instead of dying; results wait in Ray's object store
  meanwhile and are written when the database is back. Retried writes are idempotent: a tell
  that committed before the connection broke is recognised and not told twice.
* Batching. Writes go to one write queue (hpo.store.write_queue) and the driver calls `flush`
  once per tick. On the driver's own storage (`OwnedStudyStorage`) that queue is the storage's:
  a tell commits everything queued for the study with it, attempt rows included, in one
  transaction. On Optuna's own storage (write-behind off, see hpo.store.optuna_adapter) Optuna
  commits each write itself and the queue, holding only attempt rows, is flushed after each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from hpo.defaults import LEASE_S
from hpo.store.attrs import ATTEMPT_ATTR, ERROR_ATTR, INFO_ATTR, RETRY_OF_ATTR, STOPPED_ATTR
from hpo.store.jobs import utcnow
from hpo.store.optuna_adapter import inside_optimize, stop_requested, storage_of, study_id_of
from hpo.store.optuna_adapter import trial_id as id_of
from hpo.store.schema import trial_attempts
from hpo.store.write_queue import WriteQueue

log = logging.getLogger("hpo.run.driver")
T = TypeVar("T")


# Operational errors that pass (the server restarts, fails over, is busy or locked), by driver.
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57")  # connection, rollback, resources, operator
_MYSQL_TRANSIENT = {1040, 1053, 1205, 1213, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031}
_SQLITE_TRANSIENT = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL"}


def _is_outage(exc: BaseException) -> bool:
    """Whether a write failed because the store is (for now) unreachable, busy or locked, so
    that it is worth retrying; an error in what was written (a failed CHECK constraint or an
    unknown column on MySQL is an OperationalError too, as is SQLite's "no such table") is
    raised at once."""
    if isinstance(exc, StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__  # Optuna wraps the database's error
    if isinstance(exc, DBAPIError) and getattr(exc, "connection_invalidated", False):
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # pymysql and mysqlclient: (errno, message)
        return args[0] in _MYSQL_TRANSIENT
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg; None when no server answered
    if sqlstate:
        return sqlstate[:2] in _PG_TRANSIENT_CLASSES
    name = getattr(orig, "sqlite_errorname", None)  # sqlite3
    if name:
        return name in _SQLITE_TRANSIENT
    return True  # no code to go by (e.g. a connection that could not be made): an outage


class StudyRecorder:
    def __init__(
        self,
        study: optuna.Study,
        *,
        owner: str = "",
        engine: Engine | None = None,
        outage_timeout: float = 600.0,
        lease_s: float = LEASE_S,
    ) -> None:
        self.study = study
        self.owner = owner
        self.engine = engine  # hpo's tables; None when driving a bare Optuna study
        self.outage_timeout = outage_timeout
        self.lease_s = lease_s
        self._multi_objective = len(study.directions) > 1
        self.storage = storage_of(study)
        # One write queue for the study's rows and hpo's attempt rows. On the owned storage it is
        # the storage's own, so an attempt's end commits with its trial's tell; on Optuna's own
        # storage (write-behind off) Optuna commits each write, and the queue is flushed after.
        queue = getattr(self.storage, "queue", None)
        self._commits_with_tells = isinstance(queue, WriteQueue)
        if not self._commits_with_tells:
            queue = WriteQueue(sessionmaker(bind=engine)) if engine is not None else None
        self.queue: WriteQueue | None = queue
        # On the owned storage a trial's attempt row commits in the very transaction that starts
        # the trial, so a RUNNING trial without one was started by someone else (`optuna ask`).
        self.rows_at_start = self._commits_with_tells and engine is not None
        if self.rows_at_start:
            self.storage.on_start = self._attempt_row

    # -- resilience -------------------------------------------------------------------------

    def _retrying(self, what: str, func: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.outage_timeout
        delay = 0.5
        while True:
            try:
                return func()
            except (OperationalError, DBAPIError, StorageInternalError) as exc:
                if not _is_outage(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("store unreachable during %s; retrying in %.1f s", what, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def flush(self) -> None:
        """Write what is queued, in one transaction."""
        if self.queue is not None and self.queue.pending:
            self._retrying("flush", self.queue.flush)

    # -- trials ---------------------------------------------------------------------------

    def ask(self) -> optuna.Trial:
        return self._retrying("ask", self.study.ask)

    def started(self, trial: optuna.Trial, when: datetime) -> None:
        """The trial's worker started it at ``when`` (queued writes; Optuna stamped the ask)."""
        set_start = getattr(self.storage, "set_trial_start", None)  # Optuna's own storage has none
        if set_start is not None:
            try:
                set_start(id_of(trial), when)
            except UpdateFinishedTrialError:
                pass

    def report(self, trial: optuna.Trial, step: int, value: float) -> bool:
        """Store an intermediate value; True when the pruner says the trial should stop, or when
        the trial was finished by someone else meanwhile (e.g. from optuna-dashboard): its worker
        stops, and its result is dropped when it arrives."""
        try:
            if self._multi_objective:
                # Optuna neither stores nor prunes reports of multi-objective trials; keep the
                # learning curve visible anyway, and never prune.
                self._retrying(
                    "report", lambda: self.storage.set_trial_intermediate_value(id_of(trial), step, value)
                )
                return False
            # Optuna keeps the first value of a step reported twice, so a retried report is harmless.
            self._retrying("report", lambda: trial.report(value, step))
            return self._retrying("should_prune", trial.should_prune)
        except UpdateFinishedTrialError:
            return True

    def store_missing_reports(self, trial: optuna.Trial, reports: dict[int, float]) -> None:
        """Store intermediate values the worker sent that are not stored yet (a report still in
        flight when its trial finished), so every learning curve is complete before the tell."""
        current = self._retrying("read", lambda: self.storage.get_trial(id_of(trial)))
        if current.state.is_finished():
            return  # finished by someone else meanwhile: its curve is what they left
        for step, value in sorted(reports.items()):
            if step not in current.intermediate_values:
                try:
                    self._retrying(
                        "report", lambda: self.storage.set_trial_intermediate_value(id_of(trial), step, value)
                    )
                except UpdateFinishedTrialError:
                    return

    def complete(
        self, trial: optuna.Trial, values: list[float], constraints: dict[str, float], info: dict[str, Any]
    ) -> FrozenTrial | None:
        """Tell a result; None when the trial was already finished (a late result, dropped)."""

        def write() -> FrozenTrial:
            trial.set_user_attr(INFO_ATTR, info)
            for key, value in constraints.items():
                trial.set_constraint(key, value)  # samplers read these; feasible when all <= 0
            return self._tell(trial, values if self._multi_objective else values[0])

        return self._finish(id_of(trial), trial.number, TrialState.COMPLETE, None, write)

    def prune(self, trial: optuna.Trial, info: dict[str, Any]) -> FrozenTrial | None:
        def write() -> FrozenTrial:
            trial.set_user_attr(INFO_ATTR, info)
            return self._tell(trial, state=TrialState.PRUNED)

        return self._finish(id_of(trial), trial.number, TrialState.PRUNED, None, write)

    def fail(
        self, trial_id: int, number: int, reason: str, info: dict[str, Any] | None = None, *, stopped: bool = False
    ) -> FrozenTrial | None:
        """Finish a trial as FAIL; ``stopped``: hpo stopped it (not the objective's failure)."""

        def write() -> FrozenTrial:
            self.storage.set_trial_user_attr(trial_id, ERROR_ATTR, reason)
            if stopped:
                self.storage.set_trial_user_attr(trial_id, STOPPED_ATTR, True)
            if info:
                self.storage.set_trial_user_attr(trial_id, INFO_ATTR, info)
            return self._tell(number, state=TrialState.FAIL)

        return self._finish(trial_id, number, TrialState.FAIL, reason, write)

    def _finish(
        self, trial_id: int, number: int, state: TrialState, reason: str | None, write: Callable[[], FrozenTrial]
    ) -> FrozenTrial | None:
        """Finish a trial and its attempt row (in the tell's transaction on the owned storage);
        None when the trial was finished already (a late result, dropped)."""

        def attempt() -> FrozenTrial:
            current = self.storage.get_trial(trial_id)
            if current.state.is_finished():
                return current
            if self.queue is not None and self.engine is not None:
                self.queue.defer(self._attempt_end(number, state.name, reason), trial_id, ("attempt-end", number))
            return write()

        frozen = self._retrying("tell", attempt)
        if frozen.state != state:
            log.warning("trial %d was already %s; result dropped", frozen.number, frozen.state.name)
            if self.queue is not None:
                self.queue.drop(trial_id)  # the attempt's end as queued above is not what happened
            self.attempt_finished(number, "DROPPED", reason)
            return None
        if not self._commits_with_tells:
            self.flush()
        return frozen

    def state_of(self, trial_id: int) -> TrialState:
        """A trial's state as this recorder knows it (after a dropped tell: the store's)."""
        return self._retrying("read", lambda: self.storage.get_trial(trial_id)).state

    def retry(self, params: dict[str, Any], attempt: int, retry_of: int, attrs: dict[str, Any] | None = None) -> None:
        """Enqueue another attempt of a trial with the same parameters (a new Optuna trial)."""
        user_attrs = {ATTEMPT_ATTR: attempt, RETRY_OF_ATTR: retry_of, **(attrs or {})}
        self._retrying("enqueue", lambda: self.study.enqueue_trial(params, user_attrs=user_attrs))

    def enqueue(self, params: dict[str, Any], attrs: dict[str, Any]) -> None:
        """Queue a trial with fixed values (a PBT segment)."""
        self._retrying("enqueue", lambda: self.study.enqueue_trial(params, user_attrs=attrs))

    def set_attr(self, trial: optuna.Trial, key: str, value: Any) -> None:
        self._retrying("attr", lambda: trial.set_user_attr(key, value))

    def copy_curve(self, source: int, trial: optuna.Trial, upto: int,
                   kept: dict[int, float] | None = None) -> dict[int, float]:
        """Copy trial ``source``'s intermediate values up to step ``upto`` into ``trial`` (one
        that continues it from a checkpoint), where it has none of its own; ``kept``: the
        values saved with the checkpoint, for steps the store missed. The curve copied."""
        source_id = self._retrying(
            "read", lambda: self.storage.get_trial_id_from_study_id_trial_number(study_id_of(self.study), source))
        values = self._retrying("read", lambda: self.storage.get_trial(source_id)).intermediate_values
        curve = {step: v for step, v in {**(kept or {}), **values}.items() if step <= upto}
        self.store_missing_reports(trial, curve)
        return curve

    def best_trials(self) -> list[FrozenTrial]:
        return self._retrying("read", lambda: self.study.best_trials)

    def _tell(self, *args: Any, **kwargs: Any) -> FrozenTrial:
        # skip_if_finished: a tell retried after its first try committed is not told twice.
        # Samplers that run out of points (grid, bruteforce) call study.stop() from after_trial,
        # which Optuna only allows inside study.optimize(). Mark the tell as such so the stop is
        # recorded (see `exhausted`) instead of raising before the trial is finished.
        with inside_optimize(self.study):
            return self.study.tell(*args, skip_if_finished=True, **kwargs)

    @property
    def exhausted(self) -> bool:
        """True once the sampler said it has nothing left to sample."""
        return stop_requested(self.study)

    def sync_outside(self) -> None:
        """Look for what Optuna's tools wrote to the study meanwhile (the owned storage only)."""
        sync = getattr(self.storage, "sync", None)
        if sync is not None:
            self._retrying("read", sync)

    def outside_finished(self) -> list[FrozenTrial]:
        """Trials from outside (Optuna's tools) found finished since the last call, by a sync or
        a new trial's insert. Only the owned storage tracks them; on Optuna's own storage, none."""
        take = getattr(self.storage, "take_outside_finished", None)
        return list(take()) if take is not None else []

    def is_outside(self, trial_id: int) -> bool:
        """Whether the trial was written by someone else (Optuna's tools) while this run owns it."""
        check = getattr(self.storage, "is_outside", None)
        return bool(check(trial_id)) if check is not None else False

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self._retrying("read", lambda: self.study.get_trials(deepcopy=False, states=states))

    # -- attempt rows (hpo's own table) -----------------------------------------------------

    def _attempt_row(self, session: Session, trial: FrozenTrial) -> None:
        """The attempt row of a trial the owned storage starts, in the start's own transaction.
        A row already there for its number is a deleted study's (Optuna's tools delete a study
        without hpo's rows; a trial has no row before it starts): it is replaced."""
        now = utcnow()
        session.execute(
            trial_attempts.delete().where(trial_attempts.c.study_name == self.study.study_name,
                                          trial_attempts.c.trial_number == trial.number)
        )
        session.execute(
            trial_attempts.insert().values(
                study_name=self.study.study_name, trial_number=trial.number,
                attempt=int(trial.user_attrs.get(ATTEMPT_ATTR, 1)), retry_of=trial.user_attrs.get(RETRY_OF_ATTR),
                owner=self.owner, state="RUNNING", lease_expires_at=now + timedelta(seconds=self.lease_s),
                started_at=now,
            )
        )

    def started_here(self, numbers: list[int]) -> set[int] | None:
        """Of these trials, those hpo started (they have an attempt row); None where that cannot
        be told (Optuna's own storage writes the row after the trial's start)."""
        if not self.rows_at_start:
            return None
        if not numbers:
            return set()
        assert self.engine is not None

        def read() -> set[int]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(trial_attempts.c.trial_number).where(
                        trial_attempts.c.study_name == self.study.study_name,
                        trial_attempts.c.trial_number.in_(numbers))
                )
                return {int(n) for (n,) in rows}

        return self._retrying("read", read)

    def mark_outside(self, trial_id: int) -> None:
        """A trial someone else started: watched (and counted when it finishes) like trials added
        meanwhile, and left for its asker to tell. Only on the owned storage (``started_here``
        tells such trials apart there only)."""
        self.storage.mark_outside(trial_id)

    def attempt_started(
        self, trial_id: int, number: int, attempt: int, retry_of: int | None, lease_s: float
    ) -> None:
        """Record that this owner runs an attempt of a trial (queued when batched: the driver
        flushes before it dispatches the trial). On the owned storage the row was written as
        the trial started (``_attempt_row``)."""
        if self.engine is None or self.rows_at_start:
            return
        now = utcnow()
        self._write_attempt(
            trial_attempts.insert().values(
                study_name=self.study.study_name, trial_number=number, attempt=attempt, retry_of=retry_of,
                owner=self.owner, state="RUNNING", lease_expires_at=now + timedelta(seconds=lease_s),
                started_at=now,
            ),
            trial_id, ("attempt-start", number),
        )

    def attempt_finished(self, number: int, state: str, reason: str | None = None) -> None:
        if self.engine is None:
            return
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id_of(self.study), number)
        self._write_attempt(self._attempt_end(number, state, reason), trial_id, ("attempt-end", number))

    def _attempt_end(self, number: int, state: str, reason: str | None) -> Executable:
        return (
            trial_attempts.update()
            .where(trial_attempts.c.study_name == self.study.study_name,
                   trial_attempts.c.trial_number == number, trial_attempts.c.state == "RUNNING")
            .values(state=state, reason=reason, finished_at=utcnow(), lease_expires_at=None)
        )

    def _write_attempt(self, statement: Executable, trial_id: int, key: tuple) -> None:
        """Queue an attempt row's change; on the owned storage it commits with the next flush
        (the driver flushes before it dispatches a trial), else at once."""
        self.queue.defer(statement, trial_id, key)
        if not self._commits_with_tells:
            self.flush()

    def renew_attempts(self, lease_s: float) -> None:
        """Extend the lease of every attempt this owner is running (one statement)."""
        if self.engine is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                trial_attempts.update()
                .where(trial_attempts.c.study_name == self.study.study_name,
                       trial_attempts.c.owner == self.owner, trial_attempts.c.state == "RUNNING")
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            )
