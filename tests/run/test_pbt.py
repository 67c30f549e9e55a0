"""Population Based Training: segments as Optuna trials, exploit through checkpoints, exact
budget, lineage; bad schedule options refused before anything is written."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from hpo.errors import HpoError
from hpo.run.checkpoints import CheckpointKeeper
from hpo.run.driver import StudyDriver
from hpo.run.local_backend import LocalBackend
from hpo.store.artifacts import StudyArtifacts, study_artifacts
from hpo.store.jobs import JobState
from hpo.store.optuna_adapter import study_id_of

from studies import make_spec, new_study, stop_when_file_appears

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
PBT = {"name": "pbt", "options": {"population": 4, "interval": 2, "quantile": 0.25}}


@pytest.mark.parametrize("kind, steps, where", [("pbt", None, "folder"), ("pb2", 6, "s3")])
def test_a_pbt_study_copies_better_members_and_trains_each_member_exactly_its_epochs(
        store, tmp_path, request, kind, steps, where):
    """pb2: the same schedule, its explore step chosen by the GP bandit, its checkpoints (and so
    its exploits' copies) in an object store. With ``steps`` (the objective's epochs) the last
    segment is the one in which the objective returns."""
    options = {**PBT["options"], **({"steps": steps} if steps else {})}
    spec = make_spec(objective="objectives:pbt_score", search_space=X, n_trials=None, direction="maximize",
                     schedule={"name": kind, "options": options}, sampler="random", objective_args={"epochs": 6})
    study = new_study(store, spec)
    root = request.getfixturevalue("s3_url") if where == "s3" else str(tmp_path / "artifacts")
    artifacts = study_artifacts(root, spec.name, study_id_of(study))
    keeper = CheckpointKeeper(artifacts, 1, spec.study_directions)
    result = StudyDriver(study, spec, poll_interval=0.1, backend=LocalBackend(cpus=2), checkpoints=keeper).run()
    assert result.state == JobState.COMPLETED
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state not in (TrialState.COMPLETE,)]
    segments = [t.user_attrs["hpo:pbt"] for t in trials]
    by_number = {t.number: t for t in trials}
    # 4 members x 3 segments of 2 epochs, and (without steps) a last one per member that finds its
    # training done
    generations = 3 if steps else 4
    assert sorted((s["member"], s["generation"]) for s in segments) == [
        (m, g) for m in range(4) for g in range(generations)]
    exploits = 0
    for trial in trials:
        segment = trial.user_attrs["hpo:pbt"]
        assert trial.user_attrs.get("hpo:lineage", trial.number) == by_number[
            min(t.number for t in trials if t.user_attrs["hpo:pbt"]["member"] == segment["member"])].number
        if segment["generation"] == 0:
            assert segment["parent"] is None
            continue
        parent = by_number[segment["parent"]]
        assert parent.user_attrs["hpo:pbt"]["generation"] == segment["generation"] - 1
        own = next(t for t in trials if t.user_attrs["hpo:pbt"]["member"] == segment["member"]
                   and t.user_attrs["hpo:pbt"]["generation"] == segment["generation"] - 1)
        if segment["exploit"] is not None:
            exploits += 1
            # a better member at that step, and its checkpoint: the score goes on from the parent's
            assert parent.value > own.value
            assert parent.user_attrs["hpo:pbt"]["member"] == segment["exploit"] != segment["member"]
            assert 0.0 <= trial.params["x"] <= 1.0 and segment["changed"] == (
                {"x": [own.params["x"], trial.params["x"]]} if trial.params["x"] != own.params["x"] else {})
        else:
            assert parent.number == own.number and trial.params == own.params
        start = segment["start"]
        if start in trial.intermediate_values:  # a segment that trained
            assert trial.intermediate_values[start] == pytest.approx(parent.value + trial.params["x"])
        # one continuous curve: the parent's steps before this segment are copied in
        assert all(trial.intermediate_values[s] == parent.intermediate_values[s] for s in range(start))
    assert exploits == (generations - 1) * 1  # one bottom member per generation boundary (quantile 0.25 of 4)
    finals = [t for t in trials if t.user_attrs["hpo:run"].get("trained_out")]
    assert len(finals) == 4 and all(sorted(t.intermediate_values) == list(range(6)) for t in finals)
    best = max(t.value for t in finals)  # members that copied the best model at the end tie with it
    kept = artifacts.lineages()
    assert len(kept) == 1 and kept[0] in {t.user_attrs.get("hpo:lineage", t.number) for t in finals if t.value == best}


@pytest.mark.parametrize("schedule, error", [
    ({"name": "pbt", "options": {"population": 1}}, "population"),
    ({"name": "pbt", "options": {"mutations": ["lr"]}}, "'lr' is not in the search space"),
    ({"name": "pbt", "options": {"interval": "two"}}, "interval"),
    ({"name": "pb3"}, "schedule.name"),
])
def test_bad_schedule_options_are_refused_naming_the_option(schedule, error):
    """The spec refuses them; that `hpo submit` then writes nothing is checked from the shell below."""
    with pytest.raises(HpoError, match=error):
        make_spec(name="bad", search_space=X, schedule=schedule, n_trials=None)


def test_hpo_run_of_a_pb2_spec_hpo_best_gives_the_winning_schedule_and_the_report_draws_it(tmp_path):
    """From the shell: `hpo run` (local workers), `hpo best --json` with the schedule, and
    `hpo report` with the population's lineage and the best member's schedule."""
    import json

    from shell import embedded_data, hpo

    spec = tmp_path / "pbt.yaml"
    spec.write_text(
        "name: pbt\nobjective: builtin:branin\nobjective_args: {steps: 6, checkpoints: true}\nsearch_space: branin\n"
        "schedule: {name: pb2, options: {population: 4, interval: 2}}\nseed: 3\n")
    url = f"sqlite:///{tmp_path}/s.db"
    run = hpo("run", str(spec), "--storage", url, "--backend", "local")
    assert run.returncode == 0, run.stderr
    shown = hpo("best", "pbt", "--storage", url, "--json")
    best = json.loads(shown.stdout)
    steps = [part["steps"] for part in best["schedule"]]
    assert steps[0][0] == 0 and all(b[0] == a[1] + 1 for a, b in zip(steps, steps[1:]))
    assert best["schedule"][-1]["trial"] == best["number"]
    report = hpo("report", "pbt", "--storage", url, "--no-png", "--output", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    figures = {f["key"]: f for f in embedded_data((tmp_path / "report" / "report.html").read_text())["figures"]}
    assert figures["pbt-lineage"]["drawn"] and figures["pbt-schedule"]["drawn"], figures
    assert figures["pbt-lineage"]["basis"] == "16 finished segments"  # 4 members x 4 segments


def test_a_bad_schedule_from_the_shell_is_one_line_exit_2_and_writes_nothing(tmp_path):
    from shell import hpo

    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nobjective: builtin:branin\nsearch_space: branin\nn_trials: 4\n"
                    "schedule: {name: pbt, options: {population: 4}}\n")
    result = hpo("submit", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 2 and "drop n_trials" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.db").exists()


def _pbt_driver(store, spec, study, tmp_path, **kwargs):
    artifacts = StudyArtifacts(tmp_path / "artifacts", spec.name, study_id_of(study))
    keeper = CheckpointKeeper(artifacts, 1, spec.study_directions)
    return StudyDriver(study, spec, poll_interval=0.1, backend=LocalBackend(cpus=2), checkpoints=keeper, **kwargs)


def _segments(study) -> list[tuple[int, int]]:
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    return sorted((t.user_attrs["hpo:pbt"]["member"], t.user_attrs["hpo:pbt"]["generation"]) for t in done)


EXACT = [(m, g) for m in range(4) for g in range(4)]


def test_a_pbt_member_whose_worker_dies_goes_on_from_its_checkpoint(store, tmp_path):
    spec = make_spec(objective="objectives:pbt_score", search_space=X, n_trials=None, direction="maximize",
                     schedule=PBT, sampler="random", objective_args={"epochs": 6, "die_on_trial": 5})
    study = new_study(store, spec)
    assert _pbt_driver(store, spec, study, tmp_path).run().state == JobState.COMPLETED
    assert _segments(study) == EXACT  # budget exact: the killed segment ran again, nothing twice
    killed = study.trials[5]
    retry = next(t for t in study.trials if t.user_attrs.get("hpo:retry_of") == 5)
    assert killed.state == TrialState.FAIL and retry.user_attrs["hpo:pbt"] == killed.user_attrs["hpo:pbt"]
    assert retry.user_attrs["hpo:run"]["resumed_steps"] == killed.user_attrs["hpo:pbt"]["start"] + 1


def test_a_pbt_study_handed_back_mid_generation_finishes_exactly_on_the_next_run(store, tmp_path):
    flag = tmp_path / "stop-now"
    spec = make_spec(objective="objectives:pbt_score", search_space=X, n_trials=None, direction="maximize",
                     schedule=PBT, sampler="random", objective_args={"epochs": 6, "stop_file": str(flag)})
    study = new_study(store, spec)
    stop = stop_when_file_appears(flag)
    assert _pbt_driver(store, spec, study, tmp_path, stop=stop).run().state == JobState.INTERRUPTED
    flag.unlink()
    spec = make_spec(objective="objectives:pbt_score", search_space=X, n_trials=None, direction="maximize",
                     schedule=PBT, sampler="random", objective_args={"epochs": 6})
    assert _pbt_driver(store, spec, study, tmp_path).run().state == JobState.COMPLETED
    assert _segments(study) == EXACT
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
