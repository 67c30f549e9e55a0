"""hpo.api.run end to end: the example study on real SQLite (local workers, as `hpo run` runs it on
one machine) and on real PostgreSQL (on the session's Ray, as a cluster runs it)."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from hpo import api
from hpo.errors import HpoError
from hpo.store.database import Store
from hpo.store.jobs import Jobs, JobState

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


def test_example_on_sqlite(sqlite_url):
    summary = api.run(EXAMPLE, storage=sqlite_url, n_trials=10, backend="local")
    assert summary.state == "COMPLETED" and summary.storage == sqlite_url
    check_example_study(sqlite_url, "digits-mlp", 10, summary)


def test_example_on_postgres(ray_runtime, postgres_url):
    summary = api.run(EXAMPLE, storage=postgres_url, n_trials=10, name="digits-pg", backend="ray")
    assert summary.timings["backend"] == "ray"
    assert summary.state == "COMPLETED"
    check_example_study(postgres_url, "digits-pg", 10, summary)


def test_finished_study_is_not_run_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'again.db'}"
    spec = tmp_path / "quick.yaml"
    spec.write_text(
        "name: quick\nobjective: objectives:curve\nn_trials: 2\n"
        "search_space: {x: {type: float, low: 0, high: 1}}\n"
    )
    (tmp_path / "objectives.py").write_text((REPO / "tests" / "objectives.py").read_text())
    api.run(spec, storage=url, backend="local")
    with pytest.raises(HpoError, match="already exists .* give another name with --name"):
        api.run(spec, storage=url, backend="local")
    summary = api.run(spec, storage=url, name="quick-2", backend="local")
    assert summary.complete == 2


def test_study_created_outside_hpo_is_refused(sqlite_url):
    optuna.create_study(study_name="digits-mlp", storage=sqlite_url)
    with pytest.raises(HpoError, match="hpo did not create"):
        api.run(EXAMPLE, storage=sqlite_url, n_trials=2, backend="local")
    store = Store(sqlite_url)
    assert "hpo_jobs" not in sa.inspect(store.engine).get_table_names()  # nothing written
    store.dispose()


def test_enqueue_and_warm_start_seed_a_study(sqlite_url):
    from hpo.spec.study import parse_spec

    from conftest import TESTS_DIR

    base = {"objective": "builtin:branin", "search_space": "branin", "sampler": "random", "seed": 2}
    api.run(parse_spec({**base, "name": "source", "n_trials": 8}, base_dir=TESTS_DIR), storage=sqlite_url, backend="local")
    source = optuna.load_study(study_name="source", storage=sqlite_url)
    top3 = sorted(source.trials, key=lambda t: t.value)[:3]

    known = {"x1": 3.14159, "x2": 2.275}
    target = parse_spec(
        {**base, "name": "target", "n_trials": 6, "max_concurrent_trials": 1,
         "enqueue": [known], "warm_start": {"study": "source", "top_k": 3}},
        base_dir=TESTS_DIR,
    )
    summary = api.run(target, storage=sqlite_url, backend="local")
    trials = optuna.load_study(study_name="target", storage=sqlite_url).trials
    assert trials[0].params == known and trials[0].user_attrs["hpo:source"] == "enqueue"
    assert [t.params for t in trials[1:4]] == [t.params for t in top3]
    assert trials[1].user_attrs["hpo:source"] == f"warm_start:source#{top3[0].number}"
    assert summary.best_value <= top3[0].value  # re-evaluated, so at least as good
    assert summary.best_value == pytest.approx(0.397887, abs=1e-3)  # the enqueued optimum


def test_warm_start_from_unknown_study_writes_nothing(sqlite_url, tmp_path):
    from hpo.spec.study import parse_spec

    spec = parse_spec(
        {"name": "t", "objective": "builtin:branin", "search_space": "branin", "n_trials": 2,
         "warm_start": {"study": "nope"}},
        base_dir=tmp_path,
    )
    with pytest.raises(HpoError, match="warm_start: no study named 'nope'"):
        api.run(spec, storage=sqlite_url, backend="local")
    store = Store(sqlite_url)
    assert "hpo_jobs" not in sa.inspect(store.engine).get_table_names()
    store.dispose()
