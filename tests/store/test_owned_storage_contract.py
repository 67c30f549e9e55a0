"""Optuna's own storage contract (optuna.testing.pytest_storages.StorageTestCase, its trial-level
cases) run against hpo's owned storage (tests/store/test_owned_storage_differential.py compares what
it writes with what Optuna's RDBStorage writes).

The owned storage owns one named study; the contract creates studies of its own, so a thin
router here gives every study it creates an owned storage of its own and routes trial calls to
it. Everything else is Optuna's RDBStorage on real SQLite.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import pytest
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.testing.pytest_storages import StorageTestCase
from optuna.trial import FrozenTrial, TrialState

from hpo.store.owned_storage import OwnedStudyStorage


class OwnEveryStudy(BaseStorage):
    """Every study created through it is owned (hpo's write-behind path); trial calls go there."""

    def __init__(self, rdb: RDBStorage) -> None:
        self.rdb = rdb
        self.owned: dict[int, OwnedStudyStorage] = {}
        self.study_of: dict[int, int] = {}  # trial id -> study id

    def _of_trial(self, trial_id: int) -> BaseStorage:
        study_id = self.study_of.get(trial_id)
        return self.owned[study_id] if study_id in self.owned else self.rdb

    # studies
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        study_id = self.rdb.create_new_study(directions, study_name)
        self.owned[study_id] = OwnedStudyStorage(self.rdb, self.rdb.get_study_name_from_id(study_id))
        return study_id

    def delete_study(self, study_id: int) -> None:
        self.owned.pop(study_id, None)
        self.rdb.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.rdb.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.rdb.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.rdb.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.rdb.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.rdb.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.rdb.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.rdb.get_study_system_attrs(study_id)

    def get_all_studies(self):
        return self.rdb.get_all_studies()

    # trials
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        storage = self.owned.get(study_id, self.rdb)
        trial_id = storage.create_new_trial(study_id, template_trial)
        self.study_of[trial_id] = study_id
        return trial_id

    def set_trial_param(self, trial_id, param_name, param_value_internal, distribution) -> None:
        self._of_trial(trial_id).set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.owned.get(study_id, self.rdb).get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        return self._of_trial(trial_id).set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._of_trial(trial_id).set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._of_trial(trial_id).set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._of_trial(trial_id).set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._of_trial(trial_id).get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self.owned.get(study_id, self.rdb).get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def flush(self) -> None:
        for storage in self.owned.values():
            storage.flush()


@pytest.fixture
def storage(tmp_path):
    rdb = RDBStorage(f"sqlite:///{tmp_path / 'contract.db'}")
    yield OwnEveryStudy(rdb)
    rdb.engine.dispose()


# The trial-level cases: those are what the owned storage implements (studies pass through to
# RDBStorage). Pickling is not a contract of a driver's in-process storage.
_TRIAL_CASES = sorted(
    name for name in dir(StorageTestCase)
    if name.startswith("test_") and "trial" in name and name != "test_pickle_storage"
)


class TestOwnedStorageContract:
    pass


for _name in _TRIAL_CASES:
    setattr(TestOwnedStorageContract, _name, getattr(StorageTestCase, _name))


def test_the_contract_covers_the_trial_calls():
    assert len(_TRIAL_CASES) >= 25, _TRIAL_CASES
