"""Optuna storage for the study a driver owns: reads come from memory, writes are batched.

While a driver holds a study's lease it is the study's only writer, so the database never holds
anything the driver has not written itself. This storage keeps an in-memory mirror of the
study's trials and answers the study's reads (the pruner's and the sampler's `get_all_trials`,
`get_trial`, ...) from it instead of querying the database again and again.

Writes are applied to the mirror at once and queued (write-behind); `flush` writes the queue in
one transaction. A change of a trial's state (a tell, or a waiting trial starting) always
flushes, in the same transaction, so a trial is never finished in the database without every
parameter, report and attribute written before it. The driver flushes before it dispatches a
trial (its parameters are stored before it runs) and at least once per flush interval (the
reports of running trials), so a reader of the database lags by at most that interval. Other studies in the store
are passed straight through.

New trials are inserted in one statement, committed with whatever is queued, and numbered from
the study's trial count read in the same transaction (on a server, under the study row's lock,
as Optuna's own path takes it). Enqueued trials (a template) take Optuna's path.

Optuna's own tools may still add to the study while it runs (`study.add_trial`, `optuna ask`,
`enqueue_trial` from a script or optuna-dashboard): such trials are taken into the mirror when
the study's count shows them (every new trial's insert, and `sync`, which the driver calls once
per flush interval), so numbers never collide,
the sampler sees them and a trial enqueued from outside is run next. They stay marked as from
outside (`is_outside`) until this storage starts one of them (an enqueued one); their state is
re-read at each `sync` until they finish, and `take_outside_finished` hands the finished ones
to the driver, which counts them as the study's. ``on_start`` lets hpo write its attempt row in
the transaction that starts each trial of its own, so that a driver resuming the study tells a
trial its dead owner left RUNNING from one `optuna ask` started (``mark_outside``).

Repeating a write before it is flushed replaces the queued one, so a write retried after a
store outage is queued once; a flush whose transaction committed but whose reply was lost is
recognised when retried (the rows already exist) and not applied twice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Container, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from optuna.distributions import BaseDistribution, check_distribution_compatibility, distribution_to_json
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

from hpo.store.optuna_adapter import FrozenStudy, models
from hpo.store.optuna_adapter import trial_id as id_of
from hpo.store.write_queue import WriteQueue


class _NotWaiting(Exception):
    """A trial to be started was no longer WAITING in the database."""


class OwnedStudyStorage(BaseStorage):
    def __init__(self, backend: RDBStorage, study_name: str, engine: Engine | None = None) -> None:
        """``engine``: where the queued writes go (the backend's engine by default); hpo passes one
        without a connection ping per checkout, since the driver retries a write whose connection
        dropped."""
        self.backend = backend
        self.study_id = backend.get_study_id_from_name(study_name)
        self.study_name = study_name
        self._directions = backend.get_study_directions(self.study_id)
        self._trials: list[FrozenTrial] = []  # by trial number
        self._by_id: dict[int, FrozenTrial] = {}
        self._distributions: dict[str, BaseDistribution] = {}  # each parameter's first distribution
        self._unsure = False  # a trial's insert failed: it may have committed all the same
        self._outside: set[int] = set()  # ids of trials someone else wrote to the study meanwhile
        self._outside_finished: list[FrozenTrial] = []  # of those, finished and not yet taken
        # Called in the transaction that starts a trial of this storage's own (a new trial's
        # insert, an enqueued trial taken) with that trial: hpo writes the trial's attempt row
        # there, so a trial found RUNNING later is hpo's exactly when it has one (one that
        # Optuna's tools started, `optuna ask`, has none).
        self.on_start: Callable[[Session, FrozenTrial], None] | None = None
        # Our own sessions: Optuna's thread-local one is committed by any Optuna call in between.
        # the queue of writes not yet in the database; hpo's own rows (deferred by the recorder)
        # commit in the same transactions as the study's
        self._sessions = sessionmaker(bind=engine if engine is not None else backend.engine)
        self.queue = WriteQueue(self._sessions)
        for trial in backend.get_all_trials(self.study_id, deepcopy=False):
            self._remember(trial)

    def _remember(self, trial: FrozenTrial) -> None:
        assert trial.number == len(self._trials), "trials must arrive in number order"
        self._trials.append(trial)
        self._by_id[id_of(trial)] = trial
        for name, distribution in trial.distributions.items():
            self._distributions.setdefault(name, distribution)

    def _change(self, trial: FrozenTrial, **fields: Any) -> FrozenTrial:
        """Copy-on-write: the mirror gets a changed copy of the trial, so trial objects handed out
        by ``get_all_trials(deepcopy=False)`` never change under their reader (Optuna's contract)."""
        changed = copy.copy(trial)
        for name, value in fields.items():
            setattr(changed, name, value)
        self._trials[changed.number] = changed
        self._by_id[id_of(changed)] = changed
        return changed

    def _owned(self, study_id: int) -> bool:
        return study_id == self.study_id

    def _updatable(self, trial_id: int) -> FrozenTrial | None:
        """The mirrored trial (None when not ours); raises if it is finished, as RDBStorage does."""
        trial = self._by_id.get(trial_id)
        if trial is not None:
            self.check_trial_is_updatable(trial_id, trial.state)
        return trial

    # -- the write-behind queue (hpo.store.write_queue) --------------------------------------

    @property
    def pending(self) -> int:
        """How many writes wait for the next flush."""
        return self.queue.pending

    def defer(self, statement: Executable, trial_id: int | None = None, key: Any = None) -> None:
        """Queue a statement on another table (hpo's own rows) for the next flush, so it commits
        with the study's writes. A later statement with the same ``key`` replaces it."""
        self.queue.defer(statement, trial_id, key)

    def flush(self) -> None:
        """Write every queued change in one transaction."""
        self.queue.flush()

    # -- studies: pass through ------------------------------------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self.backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self.backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.study_id if study_name == self.study_name else self.backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.study_name if self._owned(study_id) else self.backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return list(self._directions) if self._owned(study_id) else self.backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self.backend.get_all_studies()

    # -- trials: queue the write, read from the mirror -------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if not self._owned(study_id):
            return self.backend.create_new_trial(study_id, template_trial)
        self._catch_up()
        self._unsure = True
        if template_trial is not None:  # an enqueued or added trial: Optuna's own path (rare)
            frozen = self.backend.get_trial(self.backend.create_new_trial(study_id, template_trial))
        else:
            frozen = self.queue.write(partial(self._insert_trial, datetime.now()))
        self._unsure = False
        self._adopt(frozen.number)  # trials added from outside since the last look come before it
        self._remember(frozen)
        return id_of(frozen)

    def _insert_trial(self, start: datetime, session: Session) -> FrozenTrial:
        table = models.TrialModel.__table__
        # On a server, under the study row's lock (as Optuna's own path takes it), so a trial
        # Optuna's tools create meanwhile waits; SQLite has one writer at a time anyway.
        number = self._count(session, lock=session.get_bind().dialect.name != "sqlite")
        result = session.execute(
            table.insert().values(study_id=self.study_id, number=number, state=TrialState.RUNNING,
                                  datetime_start=start)
        )
        frozen = FrozenTrial(
            number=number, state=TrialState.RUNNING, value=None, values=None, datetime_start=start,
            datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
            intermediate_values={}, trial_id=result.inserted_primary_key[0],
        )
        if self.on_start is not None:
            self.on_start(session, frozen)
        return frozen

    def _count(self, session: Session, lock: bool = False) -> int:
        """The study's trial count in the database: one statement, taking the study row's lock
        with it when ``lock``."""
        trials, studies = models.TrialModel.__table__, models.StudyModel.__table__
        count = sa.select(sa.func.count()).select_from(trials).where(trials.c.study_id == self.study_id)
        query = sa.select(count.scalar_subquery()).where(studies.c.study_id == self.study_id)
        return int(session.execute(query.with_for_update() if lock else query).scalar_one())

    def sync(self) -> None:
        """Take in what Optuna's tools wrote to the study since the last look: trials added
        (into the mirror, marked as from outside) and the state of those not finished yet."""
        open_ids = [i for i in self._outside if not self._by_id[i].state.is_finished()]
        table = models.TrialModel.__table__
        with self._sessions() as session:
            count = self._count(session)
            states = dict(session.execute(  # one query, however many are open
                sa.select(table.c.trial_id, table.c.state).where(table.c.trial_id.in_(open_ids))
            ).all()) if open_ids else {}
        self._adopt(count)
        for trial_id, state in states.items():
            if state != self._by_id[trial_id].state:  # told or started meanwhile: read it whole
                fresh = self.backend.get_trial(trial_id)
                self._replace(fresh)
                if fresh.state.is_finished():
                    self._outside_finished.append(fresh)

    def _adopt(self, upto: int) -> None:
        """Trials numbered from the mirror's end up to ``upto`` (excluded) were written by someone
        else: remember them, marked as from outside."""
        if upto <= len(self._trials):
            return
        known = len(self._trials)
        found = sorted((t for t in self.backend.get_all_trials(self.study_id, deepcopy=False)
                        if known <= t.number < upto), key=lambda t: t.number)
        for trial in found:
            self._remember(trial)
            self._outside.add(id_of(trial))
            if trial.state.is_finished():
                self._outside_finished.append(trial)

    def _replace(self, trial: FrozenTrial) -> None:
        self._trials[trial.number] = trial
        self._by_id[id_of(trial)] = trial

    def mark_outside(self, trial_id: int) -> None:
        """A trial this study holds that someone else started (found RUNNING without hpo's
        attempt row as the study resumes): watched and handed over when it finishes, as trials
        added meanwhile are."""
        self._outside.add(trial_id)

    def is_outside(self, trial_id: int) -> bool:
        """Whether someone else wrote this trial (and this storage has not started it)."""
        return trial_id in self._outside

    def take_outside_finished(self) -> list[FrozenTrial]:
        """Trials from outside found finished since the last call (each is handed out once)."""
        taken, self._outside_finished = self._outside_finished, []
        return taken

    def _catch_up(self) -> None:
        """After a trial's insert failed (a store outage), read back trials it may have created
        all the same (its commit's reply lost): they stay RUNNING and the driver fails them."""
        if not self._unsure:
            return
        for trial in self.backend.get_all_trials(self.study_id, deepcopy=False)[len(self._trials):]:
            self._remember(trial)
        self._unsure = False

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        trial = self._updatable(trial_id)
        if trial is None:
            self.backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)
            return
        previous = self._distributions.get(param_name)
        if previous is not None:
            check_distribution_compatibility(previous, distribution)
        row = dict(trial_id=trial_id, param_name=param_name, param_value=param_value_internal,
                   distribution_json=distribution_to_json(distribution))
        self.queue.upsert(("param", trial_id, param_name), param_name in trial.params, models.TrialParamModel, row,
                    ("trial_id", "param_name"))
        self._change(trial, params={**trial.params, param_name: distribution.to_external_repr(param_value_internal)},
                     distributions={**trial.distributions, param_name: distribution})
        self._distributions.setdefault(param_name, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        if self._owned(study_id) and 0 <= trial_number < len(self._trials):
            return id_of(self._trials[trial_number])
        return self.backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        trial = self._updatable(trial_id)
        if trial is None:
            return self.backend.set_trial_state_values(trial_id, state=state, values=values)
        if state == TrialState.RUNNING and trial.state != TrialState.WAITING:
            return False
        now = datetime.now()

        def change(session: Session) -> None:
            # One conditional UPDATE; the row is read only when it matched nothing, to say why.
            table = models.TrialModel.__table__
            was = [TrialState.WAITING] if state == TrialState.RUNNING else [TrialState.RUNNING, TrialState.WAITING]
            times = {"datetime_start": now} if state == TrialState.RUNNING else {}
            if state.is_finished():
                times["datetime_complete"] = now
            updated = session.execute(
                table.update().where(table.c.trial_id == trial_id, table.c.state.in_(was)).values(state=state, **times)
            )
            if updated.rowcount == 0:
                row = models.TrialModel.find_or_raise_by_id(trial_id, session)
                if row.state == state and state.is_finished():
                    return  # an earlier try committed this very change before its reply was lost
                if state == TrialState.RUNNING and not row.state.is_finished():
                    raise _NotWaiting
                raise UpdateFinishedTrialError(f"trial #{row.number} is {row.state.name} in the database already")
            if state == TrialState.RUNNING and self.on_start is not None:
                self.on_start(session, trial)
            if values:
                value_table = models.TrialValueModel.__table__
                rows = []
                for objective, value in enumerate(values):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                    rows.append(dict(trial_id=trial_id, objective=objective, value=stored, value_type=kind))
                session.execute(value_table.insert(), rows)

        try:
            self.queue.write(change)  # the queued writes commit with the state change
        except _NotWaiting:
            return False
        except UpdateFinishedTrialError:
            # Finished by someone else (the study was taken over): drop what we queued for it.
            self.queue.drop(trial_id)
            self._change(trial, state=self.backend.get_trial(trial_id).state)
            raise
        if state == TrialState.RUNNING:
            self._outside.discard(trial_id)  # a trial enqueued from outside, started here: ours now
        changes: dict[str, Any] = {"state": state}
        if values is not None:
            changes["values"] = list(values)
        if state == TrialState.RUNNING:
            changes["datetime_start"] = now
        if state.is_finished():
            changes["datetime_complete"] = now
        self._change(trial, **changes)
        return True

    def set_trial_start(self, trial_id: int, when: datetime) -> None:
        """Move a running trial's ``datetime_start`` to when its worker really started it (Optuna
        stamps the ask, which for a trial prepared ahead of a free slot is earlier), so
        optuna-dashboard's timeline and durations show run time, not queue time."""
        trial = self._updatable(trial_id)
        if trial is None or trial.datetime_start == when:
            return
        row = dict(trial_id=trial_id, datetime_start=when)
        self.queue.upsert(("start", trial_id), True, models.TrialModel, row, ("trial_id",))
        self._change(trial, datetime_start=when)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        trial = self._updatable(trial_id)
        if trial is None:
            self.backend.set_trial_intermediate_value(trial_id, step, intermediate_value)
            return
        model = models.TrialIntermediateValueModel
        stored, kind = model.intermediate_value_to_stored_repr(intermediate_value)
        row = dict(trial_id=trial_id, step=step, intermediate_value=stored, intermediate_value_type=kind)
        self.queue.upsert(("report", trial_id, step), step in trial.intermediate_values, model, row, ("trial_id", "step"))
        self._change(trial, intermediate_values={**trial.intermediate_values, step: intermediate_value})

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(models.TrialUserAttributeModel, "user_attrs", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(models.TrialSystemAttributeModel, "system_attrs", trial_id, key, value)

    def _set_attr(self, model: type, field: str, trial_id: int, key: str, value: Any) -> None:
        trial = self._updatable(trial_id)
        if trial is None:
            (self.backend.set_trial_user_attr if field == "user_attrs" else self.backend.set_trial_system_attr)(
                trial_id, key, value
            )
            return
        attrs = getattr(trial, field)
        row = dict(trial_id=trial_id, key=key, value_json=json.dumps(value))
        self.queue.upsert((model.__tablename__, trial_id, key), key in attrs, model, row, ("trial_id", "key"))
        self._change(trial, **{field: {**attrs, key: copy.deepcopy(value)}})

    def get_trial(self, trial_id: int) -> FrozenTrial:
        trial = self._by_id.get(trial_id)
        return copy.deepcopy(trial) if trial is not None else self.backend.get_trial(trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if not self._owned(study_id):
            return self.backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        trials = self._trials if states is None else [t for t in self._trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)

    def remove_session(self) -> None:
        self.backend.remove_session()
