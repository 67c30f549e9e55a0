"""Optuna storage for the study a driver owns: writes go through to SQL, reads come from memory.

While a driver holds a study's lease it is the study's only writer, so the database never holds
anything the driver has not written itself. This storage therefore writes every change to the
RDB storage first (durability is unchanged: nothing is deferred), then applies it to an
in-memory mirror of the study's trials, and answers the study's reads (the pruner's and the
sampler's `get_all_trials`, `get_trial`, ...) from that mirror instead of querying the database
again and again. Other studies in the store are passed straight through.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.study._frozen import FrozenStudy
from optuna.study._study_direction import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class OwnedStudyStorage(BaseStorage):
    def __init__(self, backend: RDBStorage, study_name: str) -> None:
        self.backend = backend
        self.study_id = backend.get_study_id_from_name(study_name)
        self.study_name = study_name
        self._directions = backend.get_study_directions(self.study_id)
        self._trials: list[FrozenTrial] = []  # by trial number
        self._by_id: dict[int, FrozenTrial] = {}
        for trial in backend.get_all_trials(self.study_id, deepcopy=False):
            self._remember(trial)

    def _remember(self, trial: FrozenTrial) -> None:
        assert trial.number == len(self._trials), "trials must arrive in number order"
        self._trials.append(trial)
        self._by_id[trial._trial_id] = trial

    def _owned(self, study_id: int) -> bool:
        return study_id == self.study_id

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

    # -- trials: write through, read from the mirror ------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        frozen = self.backend._create_new_trial(study_id, template_trial)
        if self._owned(study_id):
            self._remember(frozen)
        return frozen._trial_id

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self.backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        trial = self._by_id.get(trial_id)
        if trial is not None:
            trial._params[param_name] = distribution.to_external_repr(param_value_internal)
            trial._distributions[param_name] = distribution

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        if self._owned(study_id) and 0 <= trial_number < len(self._trials):
            return self._trials[trial_number]._trial_id
        return self.backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        changed = self.backend.set_trial_state_values(trial_id, state=state, values=values)
        trial = self._by_id.get(trial_id)
        if changed and trial is not None:
            trial.state = state
            if values is not None:
                trial.values = list(values)
            if state == TrialState.RUNNING:
                trial.datetime_start = datetime.now()
            if state.is_finished():
                trial.datetime_complete = datetime.now()
        return changed

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.backend.set_trial_intermediate_value(trial_id, step, intermediate_value)
        trial = self._by_id.get(trial_id)
        if trial is not None:
            trial.intermediate_values[step] = intermediate_value

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.backend.set_trial_user_attr(trial_id, key, value)
        trial = self._by_id.get(trial_id)
        if trial is not None:
            trial._user_attrs[key] = copy.deepcopy(value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.backend.set_trial_system_attr(trial_id, key, value)
        trial = self._by_id.get(trial_id)
        if trial is not None:
            trial._system_attrs[key] = copy.deepcopy(value)

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
