"""The jobs table: crash counting and the backoff between claims of a study whose driver crashed."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from hpo.store.jobs import Jobs, JobState, utcnow
from hpo.store.schema import jobs as jobs_table

from studies import expire_lease


def _queued(store, name: str = "s") -> Jobs:
    store.upgrade()
    jobs = Jobs(store.engine)
    jobs.create(name, "{}")
    return jobs


def _expire_backoff(store, name: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(jobs_table.update().where(jobs_table.c.study_name == name)
                     .values(not_before=utcnow() - timedelta(seconds=1)))


def test_a_crashed_job_waits_out_a_doubling_backoff_then_fails_for_good(store):
    jobs = _queued(store)
    waits = []
    for crash in (1, 2):
        assert jobs.claim_next("me", 30) is not None
        assert jobs.crashed("s", "me", "TypeError: boom", backoff_s=10) == JobState.INTERRUPTED
        job = jobs.get("s")
        assert job.crashes == crash and f"crashed ({crash} of 3" in job.message and "TypeError: boom" in job.message
        waits.append((job.not_before - job.updated_at).total_seconds())
        assert jobs.claim_next("me", 30) is None and not jobs.claim("s", "other", 30)  # backing off
        _expire_backoff(store, "s")
    assert waits == [10, 20]
    assert jobs.claim("s", "me", 30)
    assert jobs.crashed("s", "me", "TypeError: boom", backoff_s=10) == JobState.FAILED
    job = jobs.get("s")
    assert job.state == JobState.FAILED and job.message == "its driver crashed 3 times; last: TypeError: boom"
    assert jobs.claim_next("me", 30) is None


def test_queueing_again_forgets_the_crashes(store):
    jobs = _queued(store)
    jobs.claim_next("me", 30)
    jobs.crashed("s", "me", "RuntimeError: x")
    assert jobs.set_state("s", JobState.QUEUED, allowed_from={JobState.INTERRUPTED})
    job = jobs.get("s")
    assert job.crashes == 0 and job.not_before is None
    assert jobs.claim_next("me", 30) is not None


def test_a_crash_of_a_job_we_lost_changes_nothing(store):
    jobs = _queued(store)
    jobs.claim_next("me", 30)
    assert jobs.crashed("s", "someone-else", "RuntimeError: x") is None
    assert jobs.get("s").state == JobState.RUNNING and jobs.get("s").crashes == 0


def test_a_store_migrated_before_the_crash_columns_is_still_readable(store):
    from hpo.store import migrations

    jobs = _queued(store)
    migrations.downgrade(store.engine, "0002")
    older = Jobs(store.engine)
    assert [j.study_name for j in older.all()] == ["s"] and older.get("s").crashes == 0
    store.upgrade()
    assert "crashes" in {c["name"] for c in sa.inspect(store.engine).get_columns("hpo_jobs")}
    assert jobs.get("s").state == JobState.QUEUED


def test_a_lapsed_lease_is_claimable_except_by_the_owner_that_runs_it(store):
    """A serve whose renewal came late (a loaded machine, a short lease) must not start a second
    driver of a study it runs: it passes the studies it runs as ``skip``; anyone else takes it over."""
    jobs = _queued(store, "a")
    jobs.create("b", "{}")
    assert jobs.claim_next("me", 2).study_name == "a"
    expire_lease(store, "a")
    assert jobs.claim_next("me", 2, skip={"a"}).study_name == "b"  # the next one, not its own again
    assert jobs.claim_next("me", 2, skip={"a", "b"}) is None
    assert jobs.get("a").owner == "me"
    taken = jobs.claim_next("other", 2)
    assert taken.study_name == "a" and taken.owner == "other"
    assert jobs.renew("a", "me", 2) == JobState.RUNNING  # the late owner learns it lost the study


def test_a_driver_that_starts_after_its_lease_was_taken_over_writes_nothing(store):
    """run_job renews the lease before it loads the study: the checks between a claim and the
    driver's first heartbeat can outlast a short lease, and another owner may have taken over."""
    import optuna
    import pytest

    from hpo.run.driver import LeaseLost
    from hpo.run.execution import run_job

    from studies import make_spec

    spec = make_spec(name="late")
    jobs = _queued(store, "late")
    optuna.create_study(study_name="late", storage=store.optuna)
    assert jobs.claim("late", "me", 2)
    expire_lease(store, "late")
    assert jobs.claim("late", "other", 30)
    with pytest.raises(LeaseLost):
        run_job(store, spec, "me", lease_s=2)
    job = jobs.get("late")
    assert job.owner == "other" and job.state == JobState.RUNNING
    assert optuna.load_study(study_name="late", storage=store.optuna).trials == []
