"""OwnedStudyStorage: the driver's write-behind storage, on real SQLite, PostgreSQL and MariaDB.

Each test drives a study through the owned storage and reads the database back through a plain
Optuna RDBStorage (what `hpo status`, optuna-dashboard and a next owner see).
"""

from __future__ import annotations

import math

import optuna
import pytest
import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from hpo.store.database import Store
from hpo.store.jobs import utcnow
from hpo.store.owned_storage import OwnedStudyStorage
from hpo.store.schema import trial_attempts


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def url(request):
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(url):
    store = Store(url)
    store.upgrade()
    yield store
    store.dispose()


def _owned(store: Store, name: str = "s") -> tuple[optuna.Study, OwnedStudyStorage]:
    optuna.create_study(study_name=name, storage=store.optuna, sampler=optuna.samplers.RandomSampler(seed=0))
    storage = OwnedStudyStorage(store.optuna, name)
    return optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)), storage


def _db_trials(store: Store, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    fresh = optuna.storages.RDBStorage(store.url.render_as_string(hide_password=False))  # no cache
    try:
        return optuna.load_study(study_name=name, storage=fresh).get_trials(deepcopy=False)
    finally:
        fresh.engine.dispose()


def _comparable(trial: optuna.trial.FrozenTrial) -> tuple:
    def norm(values):
        return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}

    return (trial.number, trial.state, trial.values, trial.params, norm(trial.intermediate_values),
            trial.user_attrs, trial.system_attrs)


def test_database_ends_equal_to_the_mirror(store):
    study, storage = _owned(store)
    study.enqueue_trial({"x": 0.25}, user_attrs={"origin": "enqueued"})
    for i in range(4):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_categorical("kind", ["a", "b"])
        for step in range(3):
            trial.report(x * step, step)
        trial.report(float("nan"), 3)
        trial.set_user_attr("info", {"i": i, "nested": [1, 2]})
        trial.set_user_attr("info", {"i": i, "replaced": True})  # a second write of a key replaces it
        trial.set_constraint("c0", x - 0.5)  # a system attr, as samplers read it
        if i == 2:
            study.tell(trial, state=TrialState.PRUNED)
        elif i == 3:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, x)
    assert storage.pending == 0  # every tell flushed what was queued before it
    mirror = storage.get_all_trials(storage.study_id)
    stored = _db_trials(store)
    assert [_comparable(t) for t in stored] == [_comparable(t) for t in mirror]
    assert stored[0].params["x"] == 0.25 and stored[0].user_attrs["origin"] == "enqueued"
    assert stored[1].user_attrs["info"] == {"i": 1, "replaced": True}
    assert [t.state for t in stored] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]


def test_writes_wait_for_flush_and_a_tell_commits_them_together(store):
    study, storage = _owned(store)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(0.5, 0)
    assert storage.pending == 2
    stored = _db_trials(store)[0]
    assert stored.params == {} and stored.intermediate_values == {}  # queued, not written
    storage.flush()
    stored = _db_trials(store)[0]
    assert set(stored.params) == {"x"} and stored.intermediate_values == {0: 0.5}
    trial.report(0.25, 1)
    trial.set_user_attr("note", "last")
    study.tell(trial, 0.1)
    stored = _db_trials(store)[0]
    assert stored.state == TrialState.COMPLETE and stored.value == 0.1
    assert stored.intermediate_values == {0: 0.5, 1: 0.25} and stored.user_attrs == {"note": "last"}


def test_reports_of_two_running_trials_flush_in_one_go(store):
    study, storage = _owned(store)
    first, second = study.ask(), study.ask()
    for step in range(3):
        first.report(float(step), step)
        second.report(float(-step), step)
    storage.flush()
    stored = _db_trials(store)
    assert stored[0].intermediate_values == {0: 0.0, 1: 1.0, 2: 2.0}
    assert stored[1].intermediate_values == {0: 0.0, 1: -1.0, 2: -2.0}
    assert all(t.state == TrialState.RUNNING for t in stored)


def test_a_flush_retried_after_it_committed_writes_nothing_twice(store):
    """The reply of a commit can be lost (a connection broken at that moment): the retry finds
    its rows there already and must neither fail nor duplicate them."""
    study, storage = _owned(store)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(1.0, 0)
    trial.set_user_attr("k", "v")
    queued = dict(storage.queue._pending)
    storage.flush()
    storage.queue._pending.update(queued)  # as if that commit's reply never came back
    storage.flush()
    stored = _db_trials(store)[0]
    assert set(stored.params) == {"x"} and stored.intermediate_values == {0: 1.0} and stored.user_attrs == {"k": "v"}
    with store.optuna.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM trial_params")).scalar() == 1
        assert conn.execute(sa.text("SELECT COUNT(*) FROM trial_intermediate_values")).scalar() == 1


def test_a_trial_finished_by_another_owner_is_not_overwritten(store):
    """After a takeover the new owner fails the old owner's trials; the old owner's late tell
    must raise, and drop what it queued for that trial, not for the others."""
    study, storage = _owned(store)
    mine, other = study.ask(), study.ask()
    mine.report(1.0, 0)
    other.report(2.0, 0)
    store.optuna.set_trial_state_values(mine._trial_id, TrialState.FAIL)  # the new owner's write
    with pytest.raises(UpdateFinishedTrialError):
        study.tell(mine, 0.5)
    assert storage.get_trial(mine._trial_id).state == TrialState.FAIL
    storage.flush()
    stored = _db_trials(store)
    assert stored[0].state == TrialState.FAIL and stored[0].intermediate_values == {}
    assert stored[1].intermediate_values == {0: 2.0}


def test_deferred_rows_of_other_tables_commit_with_the_tell(store):
    study, storage = _owned(store)
    trial = study.ask()
    start = trial_attempts.insert().values(study_name="s", trial_number=trial.number, attempt=1, owner="me",
                                           state="RUNNING", started_at=utcnow())
    storage.defer(start, trial._trial_id, ("start", trial.number))
    end = trial_attempts.update().where(trial_attempts.c.trial_number == trial.number).values(state="COMPLETE")
    storage.defer(end, trial._trial_id, ("end", trial.number))
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(trial_attempts)).scalar() == 0
    study.tell(trial, 1.0)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(trial_attempts.c.state)).scalars().all() == ["COMPLETE"]


def test_a_write_that_is_wrong_is_not_mistaken_for_a_duplicate(store):
    study, storage = _owned(store)
    trial = study.ask()
    storage.defer(trial_attempts.insert().values(study_name="s", trial_number=0, attempt=1, owner="me",
                                                 state="RUNNING"), trial._trial_id)  # no started_at
    with pytest.raises(sa.exc.DBAPIError):  # MariaDB calls it an OperationalError
        storage.flush()
    assert storage.pending == 1  # kept: nothing is lost silently


def test_incompatible_distribution_is_refused_before_anything_is_queued(store):
    study, storage = _owned(store)
    first = study.ask()
    first.suggest_float("x", 0.0, 1.0)
    study.tell(first, 0.0)
    second = study.ask()
    with pytest.raises(ValueError):
        second.suggest_categorical("x", ["a", "b"])
    assert storage.pending == 0


def test_a_waiting_trial_is_started_once(store):
    study, storage = _owned(store)
    study.enqueue_trial({"x": 0.5})
    waiting = storage.get_all_trials(storage.study_id, states=(TrialState.WAITING,))[0]
    assert storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    assert not storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    assert _db_trials(store)[0].state == TrialState.RUNNING


def test_the_start_hook_writes_in_the_transaction_that_starts_a_trial(store):
    """hpo's attempt row commits with the trial's start (a new trial's insert, an enqueued one
    taken), and a start whose hook fails leaves no trial: the two never exist one without the other."""
    study, storage = _owned(store)
    study.enqueue_trial({"x": 0.5}, user_attrs={"tag": "enqueued"})
    started = []

    def hook(session, trial):
        started.append((trial.number, trial.user_attrs.get("tag")))
        session.execute(trial_attempts.insert().values(study_name="s", trial_number=trial.number, attempt=1,
                                                       owner="me", state="RUNNING", started_at=utcnow()))

    storage.on_start = hook
    study.ask()  # takes the enqueued trial 0
    study.ask()  # inserts trial 1
    assert started == [(0, "enqueued"), (1, None)] and storage.pending == 0
    with store.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(trial_attempts.c.trial_number)).scalars()) == [0, 1]

    def failing(session, trial):
        raise RuntimeError("the hook's write failed")

    storage.on_start = failing
    with pytest.raises(RuntimeError):
        study.ask()
    assert [t.number for t in _db_trials(store)] == [0, 1]


def test_a_new_trial_is_numbered_in_its_insert_and_commits_what_is_queued(store):
    study, storage = _owned(store)
    first = study.ask()
    first.report(0.5, 0)
    assert storage.pending == 1
    second = study.ask()  # its insert commits the queued report with it
    assert storage.pending == 0 and (first.number, second.number) == (0, 1)
    stored = _db_trials(store)
    assert [(t.number, t.state) for t in stored] == [(0, TrialState.RUNNING), (1, TrialState.RUNNING)]
    assert stored[0].intermediate_values == {0: 0.5} and stored[1].datetime_start is not None
    assert [t._trial_id for t in stored] == [first._trial_id, second._trial_id]


def test_trials_optunas_tools_write_while_the_study_is_owned_are_taken_in_and_never_renumbered(store):
    """What optuna-dashboard, the optuna CLI or a script can do to a study hpo runs: add a finished
    trial, ask one (and tell it later), enqueue one. The owned storage's numbers never collide
    with theirs; they are in its mirror (the sampler sees them), marked as from outside until
    hpo starts one; the finished ones are handed to the driver once each."""
    study, storage = _owned(store)
    ours = study.ask()
    ours.suggest_float("x", 0, 1)
    url = store.url.render_as_string(hide_password=False)
    fresh = optuna.storages.RDBStorage(url)  # another process's view: none of hpo's state
    try:
        outside = optuna.load_study(study_name="s", storage=fresh)
        x = optuna.distributions.FloatDistribution(0, 1)
        outside.add_trial(optuna.trial.create_trial(params={"x": 0.25}, distributions={"x": x}, value=0.1))
        asked = outside.ask({"x": x})
        outside.enqueue_trial({"x": 0.75})

        storage.sync()
        mirror = study.get_trials(deepcopy=False)
        assert [(t.number, t.state) for t in mirror] == [
            (0, TrialState.RUNNING), (1, TrialState.COMPLETE), (2, TrialState.RUNNING), (3, TrialState.WAITING)]
        assert [storage.is_outside(t._trial_id) for t in mirror] == [False, True, True, True]
        assert [t.number for t in storage.take_outside_finished()] == [1]
        assert storage.take_outside_finished() == []

        enqueued = study.ask()  # the trial enqueued from outside runs next, and is hpo's now
        assert enqueued.number == 3 and enqueued.suggest_float("x", 0, 1) == 0.75
        assert not storage.is_outside(enqueued._trial_id)

        outside.tell(asked, 0.3)  # the asker tells its trial while hpo still owns the study
        outside.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": x}, value=0.2))
        after = study.ask()  # no sync first: the insert itself finds trial 4 and numbers after it
        assert after.number == 5
        assert study.get_trials(deepcopy=False)[4].value == 0.2 and storage.is_outside(
            study.get_trials(deepcopy=False)[4]._trial_id)
        storage.sync()
        assert sorted(t.number for t in storage.take_outside_finished()) == [2, 4]
        assert study.get_trials(deepcopy=False)[2].state == TrialState.COMPLETE

        study.tell(ours, 0.5)
        stored = _db_trials(store)
        assert [t.number for t in stored] == list(range(6))  # one trial per number
        assert [t._trial_id for t in stored] == [t._trial_id for t in study.get_trials(deepcopy=False)]
    finally:
        fresh.engine.dispose()


class _ReplyLost:
    """Raises, once, right after a transaction of the storage committed: as if the connection
    broke before the commit's reply came back (a real commit, a real error)."""

    def __init__(self, storage: OwnedStudyStorage) -> None:
        self.armed = False
        sa.event.listen(storage.queue._session, "after_commit", self)

    def __call__(self, session) -> None:
        if self.armed:
            self.armed = False
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


def test_a_trial_whose_insert_reply_was_lost_is_read_back_not_numbered_twice(store):
    study, storage = _owned(store)
    lost = _ReplyLost(storage)
    lost.armed = True
    with pytest.raises(sa.exc.OperationalError):
        study.ask()  # trial 0 committed, but the driver never heard so
    retried = study.ask()
    assert retried.number == 1
    stored = _db_trials(store)
    assert [t.number for t in stored] == [0, 1]  # no two trials share a number
    orphan = storage.get_all_trials(storage.study_id, states=(TrialState.RUNNING,))
    assert [t.number for t in orphan] == [0, 1]  # the orphan is known (the driver fails it)


def test_a_tell_whose_reply_was_lost_is_told_once(store):
    study, storage = _owned(store)
    trial = study.ask()
    trial.report(1.0, 0)
    lost = _ReplyLost(storage)
    lost.armed = True
    with pytest.raises(sa.exc.OperationalError):
        study.tell(trial, 0.25)
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING  # as far as the driver knows
    study.tell(trial, 0.25)  # the retry finds its change committed
    stored = _db_trials(store)[0]
    assert stored.state == TrialState.COMPLETE and stored.value == 0.25 and stored.intermediate_values == {0: 1.0}
    with store.optuna.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM trial_values")).scalar() == 1


def test_the_writer_has_no_ping_and_a_dropped_connection_is_retried(postgres_url, caplog):
    """The driver's writer skips SQLAlchemy's ping per checkout; a connection the server closed
    then fails one write, and the recorder's retry goes through on a fresh connection."""
    from hpo.run.recorder import StudyRecorder

    store = Store(postgres_url)
    try:
        store.upgrade()
        optuna.create_study(study_name="s", storage=store.optuna)
        storage = OwnedStudyStorage(store.optuna, "s", engine=store.writer)
        study = optuna.load_study(study_name="s", storage=storage)
        recorder = StudyRecorder(study, engine=store.engine)
        trial = recorder.ask()
        with store.writer.connect() as conn:
            writer_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with store.engine.connect() as conn:  # the server drops the writer's (pooled) connection
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": writer_pid})
        trial.report(0.5, 0)
        with caplog.at_level("WARNING", logger="hpo.run.driver"):
            recorder.flush()  # the first try meets the dead connection (no ping); the retry writes
        assert "store unreachable during flush" in caplog.text
        assert storage.pending == 0
        assert _db_trials(store)[0].intermediate_values == {0: 0.5}
    finally:
        store.dispose()
