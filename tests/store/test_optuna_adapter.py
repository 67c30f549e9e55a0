"""hpo.store.optuna_adapter: the one module that touches Optuna's internals, and its version gate."""

from __future__ import annotations

import logging
import re
import tomllib

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpo import api
from hpo.store import optuna_adapter
from hpo.store.optuna_adapter import TESTED_OPTUNA, owned_storage_refusal
from hpo.store.schema import trial_attempts

from conftest import REPO
from studies import assert_exact_budget, make_spec

PRIVATE = re.compile(r"optuna\.[a-z_.]*\._|\._storage\b|_thread_local|_stop_flag|\._params\b|_create_new_trial"
                     r"|\._trial_id|\._study_id\b")


def test_only_the_adapter_touches_optunas_internals():
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for folder in ("hpo", "workers") for path in sorted((REPO / folder).rglob("*.py"))
        if path.name != "optuna_adapter.py"
        for number, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)
    ]
    assert offenders == []


def test_optunas_upper_bound_is_the_newest_version_tested():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (optuna_dep,) = [d for d in deps if re.match(r"optuna[<>=!~ ]", d)]
    low, high = TESTED_OPTUNA
    assert optuna_dep.replace(" ", "") == f"optuna>={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}"


def test_versions_and_schemas_outside_what_ci_tested_are_refused(sqlite_url):
    storage = RDBStorage(sqlite_url)
    try:
        assert owned_storage_refusal(storage) is None  # the installed Optuna, its own schema
        assert "outside the versions" in owned_storage_refusal(storage, "6.0.0")
        assert "outside the versions" in owned_storage_refusal(storage, "4.9.0")
        assert owned_storage_refusal(storage, "5.1.3") is None
        storage.get_current_version = lambda: "v9.9.9.z"
        assert "schema is v9.9.9.z" in owned_storage_refusal(storage)
    finally:
        storage.engine.dispose()


def test_an_unknown_schema_runs_the_study_through_optunas_own_storage(sqlite_url, monkeypatch, caplog):
    """Write-behind off: the study still ends exact, with every trial readable by Optuna."""
    monkeypatch.delenv("HPO_WRITE_BEHIND", raising=False)  # the gate decides here, not the choice
    monkeypatch.setattr(RDBStorage, "get_current_version", lambda self: "v9.9.9.z")
    monkeypatch.setattr(optuna_adapter, "_warned", set())
    caplog.set_level(logging.WARNING, logger="hpo.optuna")
    summary = api.run(make_spec(name="plain", n_trials=6, pruner="median"), storage=sqlite_url, backend="local")
    assert summary.state == "COMPLETED" and summary.complete + summary.pruned == 6
    study = optuna.load_study(study_name="plain", storage=sqlite_url)
    assert_exact_budget(study, 6)
    assert all(t.intermediate_values for t in study.get_trials(states=(TrialState.COMPLETE,)))
    # hpo's attempt rows went through the recorder's own write queue: one per trial, all ended
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(trial_attempts.c.trial_number, trial_attempts.c.state)
                            .where(trial_attempts.c.study_name == "plain")).all()
    engine.dispose()
    states = {t.number: t.state.name for t in study.trials}
    assert sorted(n for n, _ in rows) == sorted(states) and all(state == states[n] for n, state in rows)
    warnings = [r.getMessage() for r in caplog.records if r.name == "hpo.optuna"]
    assert len(warnings) == 1 and "through Optuna's own storage" in warnings[0]


def test_write_behind_can_be_turned_off_by_choice(sqlite_url, monkeypatch):
    from hpo.store.optuna_adapter import may_own

    monkeypatch.delenv("HPO_WRITE_BEHIND", raising=False)
    storage = RDBStorage(sqlite_url)
    try:
        assert may_own(storage)
        monkeypatch.setenv("HPO_WRITE_BEHIND", "off")
        assert not may_own(storage)
    finally:
        storage.engine.dispose()
