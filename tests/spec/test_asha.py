"""The ``asha`` pruner decides as Ray Tune's ASHAScheduler does: the same reports, interleaved the
same way, get the same continue/stop decisions from both (hpo's on a real Optuna study, Ray's
scheduler fed the results Tune would feed it). The driver end to end: tests/spec/test_pruners.py."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler

from hpo.errors import HpoError
from hpo.spec.asha import AshaPruner
from hpo.spec.pruners import PRUNERS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def both_decide(seed: int, direction: str, min_resource: int, factor: float, n_trials: int, steps: int,
                slots: int) -> tuple[list[str], list[str]]:
    """Trials with noisy rising curves, ``slots`` running at a time, each report handed to both
    schedulers in the same order; the decisions of each, in that order."""
    rng = random.Random(seed)
    study = optuna.create_study(direction=direction, pruner=AshaPruner(min_resource, factor))
    ray_asha = ASHAScheduler(time_attr="step", metric="value", mode=direction[:3], max_t=steps + 1,
                             grace_period=min_resource, reduction_factor=factor)
    ours: list[str] = []
    theirs: list[str] = []
    waiting = list(range(n_trials))
    running: dict[int, tuple[optuna.trial.Trial, SimpleNamespace, list[float], int]] = {}
    while waiting or running:
        while waiting and len(running) < slots:
            number = waiting.pop(0)
            level, speed = rng.uniform(0.3, 0.9), rng.uniform(0.02, 0.1)
            curve = [level + speed * math.log1p(s) + rng.gauss(0, 0.02) for s in range(steps)]
            ray_trial = SimpleNamespace(trial_id=str(number))
            ray_asha.on_trial_add(None, ray_trial)
            running[number] = (study.ask(), ray_trial, curve, 0)
        number = rng.choice(sorted(running))
        trial, ray_trial, curve, step = running[number]
        value = curve[step]
        trial.report(value, step)
        ours.append("STOP" if trial.should_prune() else "CONTINUE")
        result = {"step": step, "value": value}
        theirs.append(ray_asha.on_trial_result(None, ray_trial, result))
        if ours[-1] == "STOP" or step == steps - 1:
            ray_asha.on_trial_complete(None, ray_trial, result)
            study.tell(trial, value if ours[-1] == "CONTINUE" else None,
                       state=TrialState.COMPLETE if ours[-1] == "CONTINUE" else TrialState.PRUNED)
            del running[number]
        else:
            running[number] = (trial, ray_trial, curve, step + 1)
    return ours, theirs


@pytest.mark.parametrize(
    "seed, direction, min_resource, factor, slots",
    [(0, "maximize", 1, 3, 2), (1, "maximize", 1, 3, 8), (2, "minimize", 1, 3, 4), (3, "maximize", 2, 2, 3),
     (4, "minimize", 1, 4, 1), (5, "maximize", 1, 2.5, 5)],
)
def test_the_same_reports_get_ray_tunes_decisions(seed, direction, min_resource, factor, slots):
    ours, theirs = both_decide(seed, direction, min_resource, factor, n_trials=40, steps=12, slots=slots)
    assert ours == theirs
    assert 0 < ours.count("STOP") < 40  # the comparison met both kinds of decision


def test_it_prunes_less_than_optunas_successive_halving_on_the_same_options():
    """Why the pruner exists: the first trials at a rung need not each be the best so far."""
    rng = random.Random(7)
    curves = [[rng.uniform(0.3, 0.9) + 0.05 * s for s in range(8)] for _ in range(30)]
    pruned = {}
    for name, pruner in [("asha", AshaPruner(1, 3)),
                         ("successive_halving", optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))]:
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for curve in curves:
            trial = study.ask()
            for step, value in enumerate(curve):
                trial.report(value, step)
                if trial.should_prune():
                    study.tell(trial, state=TrialState.PRUNED)
                    break
            else:
                study.tell(trial, curve[-1])
        pruned[name] = sum(t.state == TrialState.PRUNED for t in study.trials)
    assert 0 < pruned["asha"] < pruned["successive_halving"]


def test_a_report_between_rungs_never_stops_a_trial_and_a_nan_does():
    study = optuna.create_study(direction="maximize", pruner=AshaPruner(1, 3))
    best = study.ask()
    for step in range(4):
        best.report(0.9, step)
    study.tell(best, 0.9)
    poor = study.ask()
    poor.report(0.1, 0)
    assert not poor.should_prune()  # step 0: below the first rung (step 1)
    poor.report(0.1, 1)
    assert poor.should_prune()  # rung 0, under the best's 0.9
    other = study.ask()
    other.report(0.95, 1)
    assert not other.should_prune()
    other.report(0.1, 2)
    assert not other.should_prune()  # step 2 is no rung: judged again only at step 3
    other.report(float("nan"), 3)
    assert other.should_prune()


@pytest.mark.parametrize(
    "options, message",
    [({"min_resource": 0}, "min_resource must be an integer of at least 1"),
     ({"reduction_factor": 1}, "reduction_factor must be a number above 1"),
     ({"grace_period": 1}, "unknown option 'grace_period' for pruner 'asha'")],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(HpoError, match=message):
        PRUNERS.build("asha", options)


def test_a_study_deleted_and_made_again_under_its_name_is_judged_on_its_own_trials():
    """The pruner keeps what each trial was judged on; a new study of the same name (optuna
    delete-study, then a new run) must not be judged on the old one's values."""
    storage = optuna.storages.InMemoryStorage()
    pruner = AshaPruner(1, 3)
    for first_value, pruned in [(0.9, True), (0.1, False)]:
        study = optuna.create_study(study_name="again", storage=storage, direction="maximize", pruner=pruner)
        first = study.ask()
        first.report(first_value, 0)
        first.report(first_value, 1)
        study.tell(first, first_value)
        second = study.ask()
        second.report(0.5, 0)
        second.report(0.5, 1)
        assert second.should_prune() is pruned
        optuna.delete_study(study_name="again", storage=storage)
