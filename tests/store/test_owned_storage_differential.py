"""Differential: one sequence of writes through hpo's owned storage and through Optuna's
RDBStorage reads back the same through Optuna. Needs nothing but Optuna and SQLite, so CI also
runs it, with Optuna's storage contract, on the oldest Optuna the package allows
(`make test-oldest-optuna`).
"""

from __future__ import annotations

import math

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpo.store.owned_storage import OwnedStudyStorage


def _write_sequence(study: optuna.Study) -> None:
    study.enqueue_trial({"x": 0.25, "c": "b"}, user_attrs={"origin": "enqueued"})
    for i in range(6):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_categorical("c", ["a", "b"])
        trial.suggest_int("n", 1, 8, log=True)
        trial.set_user_attr("i", i)
        for step in range(3):
            trial.report(x + step, step)
        if i == 2:
            study.tell(trial, state=TrialState.PRUNED)
        elif i == 3:
            study.tell(trial, state=TrialState.FAIL)
        elif i == 4:
            study.tell(trial, math.inf)
        else:
            study.tell(trial, x)
    study.ask()  # left RUNNING


def _read(url: str, name: str) -> list[tuple]:
    fresh = RDBStorage(url)
    try:
        trials = optuna.load_study(study_name=name, storage=fresh).get_trials(deepcopy=False)
    finally:
        fresh.engine.dispose()
    return [(t.number, t.state, t.values, t.params, t.distributions, t.intermediate_values, t.user_attrs,
             t.system_attrs) for t in trials]


def test_owned_and_optunas_storage_write_what_optuna_reads_the_same(tmp_path):
    results = []
    for kind in ("rdb", "owned"):
        url = f"sqlite:///{tmp_path / kind}.db"
        rdb = RDBStorage(url)
        optuna.create_study(study_name="s", storage=rdb)
        storage = rdb if kind == "rdb" else OwnedStudyStorage(rdb, "s")
        study = optuna.load_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=3))
        _write_sequence(study)
        if kind == "owned":
            storage.flush()
        rdb.engine.dispose()
        results.append(_read(url, "s"))
    assert results[0] == results[1]
    assert len(results[0]) == 7
