"""Trial checkpoints: the worker-side folder and reporter API, and resume instead of restart
(worker death, hand-back, cancel then resume) with the driver on real worker processes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.read.queries import trial_row
from hpo.run.checkpoints import CheckpointKeeper
from hpo.run.driver import StudyDriver
from hpo.run.local_backend import LocalBackend
from hpo.store.artifacts import StudyArtifacts, artifact_root
from hpo.store.database import Store
from hpo.store.jobs import JobState
from hpo.store.optuna_adapter import study_id_of
from workers.checkpoints import CheckpointFolder
from workers.reporter import Reporter

from studies import assert_exact_budget, make_spec, new_study

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


# -- the folder and the reporter --------------------------------------------------------------


def test_a_folder_keeps_only_its_newest_checkpoint_and_reads_back_each_kind(tmp_path):
    folder = CheckpointFolder(tmp_path / "t")
    assert folder.load() is None
    folder.save({"w": [1, 2]}, step=0)
    folder.save({"w": [3]}, step=3)
    assert folder.steps() == [3]
    assert folder.load() == ({"w": [3]}, 3)
    folder.save(b"\x00raw", step=4)
    assert folder.load() == (b"\x00raw", 4)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"big")
    folder.save(weights, step=5)
    loaded, step = folder.load()
    assert step == 5 and loaded.name == "weights.bin" and loaded.read_bytes() == b"big"
    assert sorted(os.listdir(tmp_path / "t")) == ["step-00000005"]  # no partial writes left


def test_a_checkpoint_that_fails_to_write_leaves_the_previous_one(tmp_path):
    folder = CheckpointFolder(tmp_path / "t")
    folder.save({"epoch": 1}, step=1)
    with pytest.raises(Exception):
        folder.save({"bad": lambda: None}, step=2)  # not picklable
    assert folder.load() == ({"epoch": 1}, 1)
    assert sorted(os.listdir(tmp_path / "t")) == ["step-00000001"]


def test_a_worker_killed_between_saving_a_step_and_reporting_it_continues_from_the_step_before(tmp_path):
    """Objectives save a step, then report it. Killed in between, the newest checkpoint's value
    was never reported: the retry continues from the one before (kept until the report), so its
    learning curve has no hole."""
    first = Reporter.local(checkpoint_dir=str(tmp_path / "c"))
    for step in (0, 1):
        first.save_checkpoint({"epoch": step}, step=step)
        first.report(step, 1.0 / (step + 1))
    first.save_checkpoint({"epoch": 2}, step=2)  # ... and the worker dies before report(2)
    folder = CheckpointFolder(tmp_path / "c")
    assert folder.steps() == [1, 2] and folder.latest() == 1

    retry = Reporter.local(checkpoint_dir=str(tmp_path / "c"))
    assert retry.load_checkpoint() == {"epoch": 1} and retry.checkpoint_step == 1
    assert retry.reported == {0: 1.0, 1: 0.5}
    retry.save_checkpoint({"epoch": 2}, step=2)
    assert folder.steps() == [1, 2]  # until step 2 is reported
    retry.report(2, 1 / 3)
    assert folder.steps() == [2] and folder.curve(2) == {0: 1.0, 1: 0.5, 2: 1 / 3}

    # a checkpoint saved between reports is settled by the next report after it
    retry.save_checkpoint({"epoch": 3.5}, step=4)
    retry.report(5, 0.1)
    assert folder.steps() == [4] and folder.latest() == 4 and folder.curve(4) == {0: 1.0, 1: 0.5, 2: 1 / 3}


def test_the_reporter_saves_at_the_step_reported_last_and_loads_what_was_saved(tmp_path):
    reporter = Reporter.local(checkpoint_dir=str(tmp_path / "c"))
    assert reporter.load_checkpoint() is None and reporter.checkpoint_step is None
    with pytest.raises(ValueError, match="before the first report"):
        reporter.save_checkpoint({"epoch": 0})
    reporter.report(2, 0.5)
    assert reporter.save_checkpoint({"epoch": 2}) is True
    again = Reporter.local(checkpoint_dir=str(tmp_path / "c"))
    assert again.load_checkpoint() == {"epoch": 2} and again.checkpoint_step == 2
    assert Reporter.local().save_checkpoint({"epoch": 0}, step=0) is False  # no store: nothing kept


def test_the_artifact_store_sits_next_to_a_sqlite_file_unless_named(tmp_path, monkeypatch):
    monkeypatch.delenv("HPO_ARTIFACTS", raising=False)
    assert artifact_root(Store(f"sqlite:///{tmp_path}/runs.db")) == str(tmp_path / "runs-artifacts")
    assert artifact_root(Store(f"sqlite:///{tmp_path}/runs.db"), str(tmp_path / "ck")) == str(tmp_path / "ck")
    monkeypatch.setenv("HPO_ARTIFACTS", str(tmp_path / "env"))
    assert artifact_root(Store(f"sqlite:///{tmp_path}/runs.db")) == str(tmp_path / "env")
    monkeypatch.setenv("HPO_ARTIFACTS", "s3://bucket/runs?region=eu-west-1")  # a bucket: as given
    assert artifact_root(Store(f"sqlite:///{tmp_path}/runs.db")) == "s3://bucket/runs?region=eu-west-1"


def test_a_study_running_its_last_trials_prepares_publishing_once_and_only_when_it_keeps_checkpoints(
        tmp_path, monkeypatch):
    prepared: list[int] = []
    monkeypatch.setattr("hpo.run.checkpoints.prepare", lambda: prepared.append(1))
    artifacts = StudyArtifacts(tmp_path / "artifacts", "s", 1)
    study = optuna.create_study(direction="maximize")
    CheckpointKeeper(artifacts, 1, ["maximize"], study).ending()  # nothing written: nothing to publish
    assert prepared == []
    artifacts.checkpoints(0).save({"w": 1}, step=2)
    keeper = CheckpointKeeper(artifacts, 1, ["maximize"], study)
    keeper.ending()
    keeper.ending()
    assert prepared == [1]
    CheckpointKeeper(artifacts, 0, ["maximize"], study).ending()  # keeps none
    CheckpointKeeper(artifacts, 1, ["maximize"]).ending()  # publishes nowhere
    assert prepared == [1]


# -- resume instead of restart, on real worker processes ------------------------------------


def _driver(store, spec, study, tmp_path, **kwargs):
    artifacts = StudyArtifacts(tmp_path / "artifacts", spec.name, study_id_of(study))
    keeper = CheckpointKeeper(artifacts, spec.checkpoints.keep_best, spec.study_directions)
    return StudyDriver(study, spec, poll_interval=0.1, backend=LocalBackend(cpus=2), checkpoints=keeper, **kwargs), artifacts


def _epochs(workdir: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in (workdir / "epochs.log").read_text().splitlines()]


def test_a_worker_killed_after_epoch_7_of_10_resumes_at_epoch_8(store, tmp_path):
    spec = make_spec(objective="objectives:checkpointed", search_space=X, n_trials=1, max_concurrent_trials=1,
                     objective_args={"workdir": str(tmp_path), "epochs": 10, "die_after": 7})
    study = new_study(store, spec)
    driver, artifacts = _driver(store, spec, study, tmp_path)
    result = driver.run()
    assert result.state == JobState.COMPLETED
    first, retry = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["hpo:run"]["retried"]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["hpo:retry_of"] == 0
    assert retry.params == first.params
    # the objective trained epochs 0-7 once, then 8 and 9 in the retry: nothing retrained
    assert _epochs(tmp_path) == [(0, e) for e in range(8)] + [(1, 8), (1, 9)]
    assert retry.user_attrs["hpo:run"]["resumed_steps"] == 8
    # one continuous learning curve, the same values a run without the kill reports
    x = first.params["x"]
    assert retry.intermediate_values == pytest.approx({e: x + 1.0 / (e + 1) for e in range(10)})
    # the best (only) completed trial keeps its newest checkpoint, nothing else is left
    assert artifacts.lineages() == [0] and artifacts.checkpoints(0).steps() == [9]


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["handed back", "cancelled"])
def test_a_stopped_trial_resumes_from_its_checkpoint_when_the_study_runs_again(store, tmp_path, how):
    """A hand-back (SIGTERM to `hpo run`, a serve stopping) and a cancel both stop the running
    trial; when the study runs again (the next serve, `hpo resume`) it continues, not restarts."""
    spec = make_spec(objective="objectives:checkpointed", search_space=X, n_trials=2, max_concurrent_trials=1,
                     objective_args={"workdir": str(tmp_path), "epochs": 6, "wait_after": 3})
    study = new_study(store, spec)
    stop, cancelled = threading.Event(), threading.Event()
    driver, artifacts = _driver(store, spec, study, tmp_path, stop=stop, heartbeat_interval=0.05,
                                heartbeat=lambda: JobState.CANCELLED if cancelled.is_set() else None)
    stopper = threading.Thread(target=lambda: (_wait_for(tmp_path / "waiting"),
                                               (stop if how == "handed back" else cancelled).set()))
    stopper.start()
    first = driver.run()
    stopper.join()
    assert first.state == (JobState.INTERRUPTED if how == "handed back" else JobState.CANCELLED)
    assert first.counts.stopped == 1 and first.counts.failed == 0
    assert artifacts.checkpoints(0).steps() == [3]  # kept for the trial that goes on

    second, _ = _driver(store, spec, study, tmp_path)
    assert second.run().state == JobState.COMPLETED
    assert_exact_budget(study, 2)
    stopped, resumed = study.trials[0], study.trials[1]
    assert stopped.user_attrs["hpo:stopped"] and resumed.user_attrs["hpo:resumes"] == 0
    assert resumed.params == stopped.params and resumed.user_attrs["hpo:attempt"] == 1  # no retry used up
    assert [e for t, e in _epochs(tmp_path) if t == resumed.number] == [4, 5]
    assert sorted(resumed.intermediate_values) == list(range(6))
    assert resumed.user_attrs["hpo:run"]["resumed_steps"] == 4
    assert trial_row(resumed)["resumed_steps"] == 4  # what `hpo trials` shows ("6 (4 resumed)")


def test_only_the_best_completed_trials_keep_checkpoints_when_the_study_ends(store, tmp_path):
    spec = make_spec(objective="objectives:checkpointed", search_space=X, n_trials=8, sampler="random",
                     objective_args={"workdir": str(tmp_path), "epochs": 4},
                     pruner={"name": "median", "options": {"n_startup_trials": 2}},
                     checkpoints={"keep_best": 2})
    study = new_study(store, spec)
    driver, artifacts = _driver(store, spec, study, tmp_path)
    assert driver.run().state == JobState.COMPLETED
    complete = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert len(complete) >= 2
    assert artifacts.lineages() == sorted(t.number for t in complete[:2])
    assert all(artifacts.checkpoints(n).steps() == [3] for n in artifacts.lineages())


def test_a_study_deleted_and_created_again_under_its_id_trains_from_scratch(store, tmp_path):
    """SQLite gives a study created after the newest one's deletion the same id, so the same
    checkpoint folder; its trials (same seed: the same parameters, so an old checkpoint would
    load) train from the first epoch and the old study's folders are gone."""
    spec = make_spec(objective="objectives:checkpointed", search_space=X, n_trials=3, max_concurrent_trials=1,
                     sampler="random", objective_args={"workdir": str(tmp_path), "epochs": 3},
                     checkpoints={"keep_best": 2})
    old = new_study(store, spec)
    driver, artifacts = _driver(store, spec, old, tmp_path)
    assert driver.run().state == JobState.COMPLETED
    old_params, kept = [t.params for t in old.trials], artifacts.lineages()
    assert len(kept) == 2
    optuna.delete_study(study_name=spec.name, storage=store.optuna)
    (tmp_path / "epochs.log").unlink()

    study = new_study(store, spec)
    assert study_id_of(study) == study_id_of(old)
    driver, artifacts = _driver(store, spec, study, tmp_path)
    assert driver.run().state == JobState.COMPLETED
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert [t.params for t in study.trials] == old_params
    assert sorted(_epochs(tmp_path)) == [(t, e) for t in range(3) for e in range(3)]
    assert not any(t.user_attrs["hpo:run"].get("resumed_steps") for t in study.trials)
    assert len(artifacts.lineages()) == 2 and all(artifacts.checkpoints(n).steps() == [2] for n in artifacts.lineages())


def test_hpo_run_keeps_the_best_checkpoint_beside_the_database_and_delete_removes_it(tmp_path, monkeypatch):
    from hpo import api

    monkeypatch.delenv("HPO_ARTIFACTS", raising=False)
    url = f"sqlite:///{tmp_path}/runs.db"
    spec = make_spec(name="ckpt", objective="builtin:branin", search_space="branin", sampler="random", n_trials=4,
                     objective_args={"steps": 3, "checkpoints": True})
    summary = api.run(spec, storage=url, backend="local")
    assert summary.state == "COMPLETED"
    folders = [p for p in (tmp_path / "runs-artifacts").iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.startswith("ckpt.")
    assert [p.name for p in folders[0].iterdir()] == [f"trial-{summary.best_trial}"]  # keep_best: 1
    assert api.delete("ckpt", storage=url)
    assert list((tmp_path / "runs-artifacts").iterdir()) == []  # its folder, and the published copy
