"""Migrations of hpo's own tables on SQLite, PostgreSQL and MariaDB, beside Optuna's tables."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa

from hpo.store import migrations
from hpo.store.database import Store
from hpo.store.schema import VERSION_TABLE


def _tables(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    store = Store(url)
    yield store
    store.dispose()


def test_upgrade_from_empty_then_round_trip(store):
    assert _tables(store.engine) == set()
    store.upgrade()
    assert {"hpo_jobs", "hpo_trial_attempts", VERSION_TABLE} <= _tables(store.engine)
    head = migrations.current(store.engine)
    assert head == "0003"

    migrations.downgrade(store.engine, "0001")
    assert "hpo_trial_attempts" not in _tables(store.engine) and "hpo_jobs" in _tables(store.engine)
    migrations.downgrade(store.engine, "base")
    assert "hpo_jobs" not in _tables(store.engine)
    assert migrations.current(store.engine) is None

    store.upgrade()
    assert migrations.current(store.engine) == head
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("hpo_jobs")}
    assert {"study_name", "spec", "state", "owner", "lease_expires_at", "created_at"} <= columns


def test_coexists_with_optuna_tables(store):
    # Optuna first (it creates its tables and `alembic_version`), then ours, then Optuna again.
    optuna.create_study(study_name="before", storage=store.optuna)
    store.upgrade()
    store.upgrade()  # idempotent
    tables = _tables(store.engine)
    assert {"studies", "trials", "alembic_version", "hpo_jobs", VERSION_TABLE} <= tables
    with store.engine.connect() as conn:
        optuna_rev = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        ours = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    assert ours == "0003" and optuna_rev != ours
    study = optuna.create_study(study_name="after", storage=store.optuna)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert {s.study_name for s in optuna.get_all_study_summaries(store.optuna)} == {"before", "after"}
    # Downgrading ours leaves Optuna's tables alone.
    migrations.downgrade(store.engine, "base")
    assert {"studies", "trials", "alembic_version"} <= _tables(store.engine)
    assert len(optuna.load_study(study_name="after", storage=store.optuna).trials) == 2
