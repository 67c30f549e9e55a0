"""hpo.read.accounting on real Optuna trials in a real SQLite store: exact numbers, no Ray."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.errors import HpoError
from hpo.read import accounting
from hpo.read.accounting import (
    energy_kwh,
    epochs_trained,
    full_epochs,
    pruning_saving,
    resolve_watts,
    study_compute,
)

X = {"x": FloatDistribution(0.0, 1.0)}


def run(cpu_s, gpu_s, last_step, **extra):
    """The `hpo:run` attribute the driver stores for a collected trial."""
    return {"hpo:run": {"owner": "t", "attempt": 1, "node": "n1", "device": "cpu", "duration_s": 1.0,
                        "cpu_s": cpu_s, "gpu_s": gpu_s, "last_step": last_step, "metrics": {}, **extra}}


def curve(steps: int) -> dict[int, float]:
    return {step: 1.0 / (step + 1) for step in range(steps)}


@pytest.fixture
def study(store):
    """A study in SQLite with one trial of every kind the accounting has to handle."""
    study = optuna.create_study(study_name="acc", storage=store.optuna)
    trials = [
        # complete: 10 epochs, 20 CPU-s, 10 GPU-s
        create_trial(value=0.1, params={"x": 0.1}, distributions=X, intermediate_values=curve(10),
                     user_attrs=run(20.0, 10.0, 9, pid=101, cold_start=True, startup_s=3.5, startup_cpu_s=4.0)),
        # pruned after 2 epochs: 2 CPU-s and 1 GPU-s per epoch
        create_trial(state=TrialState.PRUNED, params={"x": 0.2}, distributions=X, intermediate_values=curve(2),
                     user_attrs=run(4.0, 2.0, 1, pid=101, cold_start=False)),
        # pruned after 5 epochs: 2 CPU-s per epoch, no GPU
        create_trial(state=TrialState.PRUNED, params={"x": 0.3}, distributions=X, intermediate_values=curve(5),
                     user_attrs=run(10.0, 0.0, 4, pid=202, cold_start=True, startup_s=2.5, startup_cpu_s=3.0)),
        # failed after using 6 CPU-s: used, but nothing saved
        create_trial(state=TrialState.FAIL, params={"x": 0.4}, distributions=X, intermediate_values=curve(3),
                     user_attrs=run(6.0, 0.0, 2, retried=False)),
        # complete but never collected by the driver (e.g. added by hand): not measured
        create_trial(value=0.5, params={"x": 0.5}, distributions=X, intermediate_values=curve(12)),
    ]
    for trial in trials:
        study.add_trial(trial)
    return optuna.load_study(study_name="acc", storage=store.optuna)  # read back from the database


def test_totals_savings_and_energy_are_exact(study):
    trials = study.get_trials()
    compute = study_compute(trials, {"epochs": 10}, cpu_watts=15, gpu_watts=300)
    assert compute == {
        "trials_measured": 4,
        # two processes ran the measured trials, each paid its start-up once (the failed
        # trial's record has no process: e.g. its worker died)
        "workers": {"processes": 2, "cold_starts": 2, "startup_cpu_s": 7.0, "startup_s": 6.0},
        "cpu_s": 40.0,
        "gpu_s": 12.0,
        "cpu_hours": 40.0 / 3600,
        "gpu_hours": 12.0 / 3600,
        "kwh": (40.0 * 15 + 12.0 * 300) / 3.6e6,
        "cpu_watts": 15.0,
        "gpu_watts": 300.0,
        "saved": {
            "full_epochs": 10,
            "pruned_trials": 2,
            "epochs": 8 + 5,
            "cpu_s": 8 * 2.0 + 5 * 2.0,
            "gpu_s": 8 * 1.0,
            "cpu_hours": 26.0 / 3600,
            "gpu_hours": 8.0 / 3600,
            "kwh": (26.0 * 15 + 8.0 * 300) / 3.6e6,
        },
    }
    assert compute["kwh"] == 4200 / 3.6e6


def test_full_epochs_come_from_the_spec_else_from_complete_trials(study):
    trials = study.get_trials()
    assert full_epochs(trials, {"epochs": 10}) == 10
    assert full_epochs(trials, {"epochs": 7.0}) == 7
    # No (usable) epochs in the spec: the most steps any complete trial reported (12, the
    # hand-added one, from its intermediate values).
    for args in (None, {}, {"epochs": "ten"}, {"epochs": 0}, {"epochs": 2.5}, {"epochs": True}):
        assert full_epochs(trials, args) == 12
    assert full_epochs([t for t in trials if t.state != TrialState.COMPLETE]) is None


def test_savings_without_a_spec_use_the_longest_complete_trial(study):
    compute = study_compute(study.get_trials(), cpu_watts=10, gpu_watts=100)
    saved = compute["saved"]
    # full run 12 epochs: 10 and 7 epochs skipped
    assert saved["full_epochs"] == 12 and saved["epochs"] == 17
    assert saved["cpu_s"] == 10 * 2.0 + 7 * 2.0 and saved["gpu_s"] == 10 * 1.0
    assert saved["kwh"] == (34.0 * 10 + 10.0 * 100) / 3.6e6


def test_one_pruned_trial(study):
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert [epochs_trained(t) for t in pruned] == [2, 5]
    saving = pruning_saving(pruned[0], 10)
    assert (saving.epochs_trained, saving.epochs_saved, saving.cpu_s, saving.gpu_s) == (2, 8, 16.0, 8.0)
    # A pruned trial that trained as long as a full run (or longer) saved nothing.
    assert pruning_saving(pruned[1], 4).epochs_saved == 0 and pruning_saving(pruned[1], 4).cpu_s == 0.0
    assert pruning_saving(pruned[0], None) is None
    complete = study.get_trials(states=(TrialState.COMPLETE,))[0]
    assert pruning_saving(complete, 10) is None


def test_a_pruned_trial_without_run_info_saves_nothing_measurable(store):
    study = optuna.create_study(study_name="bare", storage=store.optuna)
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0.2}, distributions=X,
                                 intermediate_values=curve(3)))
    study.add_trial(create_trial(state=TrialState.RUNNING, params={"x": 0.3}, distributions=X))
    compute = study_compute(study.get_trials(), {"epochs": 5}, cpu_watts=15, gpu_watts=300)
    assert compute["trials_measured"] == 0 and compute["cpu_s"] == 0.0 and compute["kwh"] == 0.0
    assert compute["saved"]["epochs"] == 2 and compute["saved"]["cpu_s"] == 0.0


def test_energy_formula():
    assert energy_kwh(3600.0, 0.0, 1000.0, 0.0) == 1.0  # one core at 1 kW for an hour
    assert energy_kwh(0.0, 7200.0, 0.0, 500.0) == 1.0
    assert energy_kwh(480.0, 120.0, 15.0, 300.0) == 0.012


def test_watts_from_arguments_environment_and_defaults(monkeypatch):
    monkeypatch.delenv("HPO_CPU_WATTS", raising=False)
    monkeypatch.delenv("HPO_GPU_WATTS", raising=False)
    assert resolve_watts() == (accounting.DEFAULT_CPU_WATTS, accounting.DEFAULT_GPU_WATTS) == (15.0, 300.0)
    monkeypatch.setenv("HPO_CPU_WATTS", "7.5")
    monkeypatch.setenv("HPO_GPU_WATTS", "250")
    assert resolve_watts() == (7.5, 250.0)
    assert resolve_watts(20, None) == (20.0, 250.0)
    monkeypatch.setenv("HPO_GPU_WATTS", "lots")
    with pytest.raises(HpoError, match="HPO_GPU_WATTS='lots' is not a number"):
        resolve_watts()
    with pytest.raises(HpoError, match=">= 0"):
        resolve_watts(-1.0, 0.0)


def test_human_units():
    from hpo.read.accounting import human_compute, human_energy, usage_text

    assert [human_energy(k) for k in (0, 1.87e-8, 0.0042, 2.5)] == ["0 Wh", "0.0187 mWh", "4.2 Wh", "2.5 kWh"]
    assert [human_compute(s, "CPU") for s in (0.7, 900, 7200)] == ["0.7 CPU-s", "15 CPU-min", "2 CPU-h"]
    assert usage_text({"cpu_s": 3.2, "gpu_s": 0.0, "kwh": 1.3e-5}, gpu=False) == "3.2 CPU-s, 13 mWh"
    assert "GPU" in usage_text({"cpu_s": 3.2, "gpu_s": 1.0, "kwh": 1.3e-5}, gpu=True)
