"""hpo.api.run end to end: the example study on real SQLite and PostgreSQL, on the session's Ray."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from hpo import api
from hpo.errors import HpoError
from hpo.jobs import Jobs, JobState
from hpo.store import Store

from conftest import REPO

EXAMPLE = REPO / "examples" / "digits-mlp.yaml"


def check_example_study(url: str, name: str, n_trials: int, summary) -> None:
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) + len(by_state[TrialState.PRUNED]) == n_trials
    assert not by_state[TrialState.RUNNING]
    assert by_state[TrialState.PRUNED], "successive halving pruned nothing"
    for trial in by_state[TrialState.COMPLETE]:
        assert sorted(trial.intermediate_values) == list(range(12))  # one report per epoch
    for trial in by_state[TrialState.PRUNED]:
        assert 0 < len(trial.intermediate_values) < 12
    best = study.best_trial
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert summary.best_trial == best.number and summary.best_value == best.value
    assert summary.best_params == best.params
    assert 0.8 < best.value <= 1.0  # the MLP really learned the digits
    assert summary.complete == len(by_state[TrialState.COMPLETE])
    assert summary.pruned == len(by_state[TrialState.PRUNED])
    engine = sa.create_engine(url)
    job = Jobs(engine).get(name)
    engine.dispose()
    assert job.state == JobState.COMPLETED and job.lease_expires_at is None and job.finished_at


def test_example_on_sqlite(ray_runtime, sqlite_url):
    summary = api.run(EXAMPLE, storage=sqlite_url, n_trials=10)
    assert summary.state == "COMPLETED" and summary.storage == sqlite_url
    check_example_study(sqlite_url, "digits-mlp", 10, summary)


def test_example_on_postgres(ray_runtime, postgres_url):
    summary = api.run(EXAMPLE, storage=postgres_url, n_trials=10, name="digits-pg")
    assert summary.state == "COMPLETED"
    check_example_study(postgres_url, "digits-pg", 10, summary)


def test_finished_study_is_not_run_again(ray_runtime, tmp_path):
    url = f"sqlite:///{tmp_path / 'again.db'}"
    spec = tmp_path / "quick.yaml"
    spec.write_text(
        "name: quick\nobjective: objectives:curve\nn_trials: 2\n"
        "search_space: {x: {type: float, low: 0, high: 1}}\n"
    )
    (tmp_path / "objectives.py").write_text((REPO / "tests" / "objectives.py").read_text())
    api.run(spec, storage=url)
    with pytest.raises(HpoError, match="already exists .* give another name with --name"):
        api.run(spec, storage=url)
    summary = api.run(spec, storage=url, name="quick-2")
    assert summary.complete == 2


def test_study_created_outside_hpo_is_refused(ray_runtime, sqlite_url):
    optuna.create_study(study_name="digits-mlp", storage=sqlite_url)
    with pytest.raises(HpoError, match="hpo did not create"):
        api.run(EXAMPLE, storage=sqlite_url, n_trials=2)
    store = Store(sqlite_url)
    assert "hpo_jobs" not in sa.inspect(store.engine).get_table_names()  # nothing written
    store.dispose()
