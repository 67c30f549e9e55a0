"""Successive halving / Hyperband with promotion: trials pause at a rung and are promoted from
their checkpoint later. The policy on its own (no processes), then whole studies on real Optuna,
SQLite and worker processes: exact configuration budget, continuous curves, nothing promotable
left paused, a hand-back in the middle, bad options refused."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from hpo.errors import HpoError
from hpo.run.checkpoints import CheckpointKeeper
from hpo.run.driver import StudyDriver
from hpo.run.local_backend import LocalBackend
from hpo.run.promotion import PromotionSchedule
from hpo.spec.schedules import PromotionOptions
from hpo.store.artifacts import StudyArtifacts
from hpo.store.jobs import JobState
from hpo.store.optuna_adapter import study_id_of

from studies import make_spec, new_study, stop_when_file_appears

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
ASHA = {"name": "successive_halving", "options": {"promotion": True, "min_resource": 1, "reduction_factor": 3}}


# -- the policy alone ------------------------------------------------------------------------


class _Trial:  # the parts of a FrozenTrial the schedule reads
    def __init__(self, number, state, params, attrs=None):
        self.number, self.state, self.params, self.user_attrs = number, state, params, attrs or {}


def _asha(n_trials=9, maximize=True, **options):
    opts = PromotionOptions(pruner="successive_halving", **{"min_resource": 1, "reduction_factor": 3, **options})
    return PromotionSchedule(opts, n_trials, maximize)


def test_a_trial_pauses_at_a_rung_unless_it_ranks_in_the_top_third_and_is_promoted_when_it_does():
    asha = _asha()
    attrs = {}
    for number, value in enumerate([0.5, 0.2]):  # the first two cannot rank in a top third of <3
        attrs[number] = asha.dispatched(number, {})
        assert asha.stops(number, attrs[number], 0, value) is False  # step 0: below the first rung
        assert asha.stops(number, attrs[number], 1, value) is True  # rung 0 (step 1): pause
        asha.finished(_Trial(number, TrialState.PRUNED, {"x": value}), {"paused_at": 1})
    attrs[2] = asha.dispatched(2, {})
    assert asha.stops(2, attrs[2], 1, 0.1) is True  # third of three, worst: pauses too
    assert asha.reported() == [({"x": 0.5}, {"hpo:promotion": {"bracket": 0, "from_rung": 0},
                                              "hpo:lineage": 0, "hpo:resumes": 0}, None)]
    # the promotion is queued before any new configuration
    assert asha.ready() and asha.queued == 1
    assert asha.dispatched(9, {"hpo:promotion": {"bracket": 0, "from_rung": 0}, "hpo:lineage": 0}) is None
    assert asha.queued == 0
    assert asha.stops(9, {"hpo:lineage": 0}, 2, 0.6) is False  # on towards rung 1 (step 3)
    attrs[3] = asha.dispatched(3, {})
    assert asha.stops(3, attrs[3], 1, 0.9) is False  # best of four at rung 0: goes on at once


def test_the_budget_counts_configurations_and_hyperband_fills_its_brackets_in_proportion():
    asha = _asha(n_trials=2)
    asha.dispatched(0, {})
    asha.dispatched(1, {})
    assert not asha.ready()  # two configurations started; continuations are not new ones
    asha.requeued()
    assert asha.ready()

    hyperband = PromotionSchedule(
        PromotionOptions(pruner="hyperband", min_resource=1, max_resource=27, reduction_factor=3), None, True)
    assert hyperband.rates == [0, 1, 2, 3]
    brackets = [hyperband.dispatched(n, {})["hpo:promotion"]["bracket"] for n in range(60)]
    counts = [brackets.count(b) for b in range(4)]
    assert counts[0] > counts[1] > counts[2] > counts[3] >= 1  # the early-stopping brackets get more
    assert hyperband.milestone(2, 0) == 9 and hyperband.milestone(0, 1) == 3


def test_recover_rebuilds_rungs_pauses_and_queued_promotions_from_the_trials():
    seg = {"bracket": 0, "from_rung": None}
    trials = [
        _FrozenLike(0, TrialState.PRUNED, 0.5, {0: 0.2, 1: 0.5}, seg, paused_at=1),
        _FrozenLike(1, TrialState.PRUNED, 0.2, {0: 0.1, 1: 0.2}, seg, paused_at=1),
        _FrozenLike(2, TrialState.COMPLETE, 0.9, {0: 0.4, 1: 0.9, 2: 1.2, 3: 1.5}, seg),  # went on at rung 0
    ]
    asha = _asha()
    queued = asha.recover(trials)
    assert len(asha.lineages) == 3 and asha.lineages[2].done and asha.lineages[2].promoted == {0}
    # three reached rung 0: the top third is lineage 2 alone (0.9), so lineage 0 (0.5) stays paused
    assert queued == [] and asha.lineages[0].paused == (0, 0)
    trials.append(_FrozenLike(3, TrialState.PRUNED, 0.05, {0: 0.0, 1: 0.05}, seg, paused_at=1))
    trials.append(_FrozenLike(4, TrialState.PRUNED, 0.01, {0: 0.0, 1: 0.01}, seg, paused_at=1))
    trials.append(_FrozenLike(5, TrialState.PRUNED, 0.02, {0: 0.0, 1: 0.02}, seg, paused_at=1))
    asha = _asha()
    queued = asha.recover(trials)  # six at rung 0: the top two are 2 (promoted) and 0 (paused)
    assert [attrs["hpo:lineage"] for _, attrs, _ in queued] == [0] and asha.queued == 1


def _FrozenLike(number, state, value, curve, segment, paused_at=None):
    import optuna

    info = {"paused_at": paused_at} if paused_at is not None else {}
    trial = optuna.trial.create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None, params={"x": value},
        distributions={"x": optuna.distributions.FloatDistribution(0, 1)}, intermediate_values=curve,
        user_attrs={"hpo:promotion": segment, "hpo:run": info})
    trial.number = number
    return trial


# -- whole studies ---------------------------------------------------------------------------


def _driver(spec, study, tmp_path, **kwargs):
    artifacts = StudyArtifacts(tmp_path / "artifacts", spec.name, study_id_of(study))
    keeper = CheckpointKeeper(artifacts, 1, spec.study_directions)
    return StudyDriver(study, spec, poll_interval=0.1, backend=LocalBackend(cpus=2), checkpoints=keeper, **kwargs), artifacts


def _lineage(trial) -> int:
    return int(trial.user_attrs.get("hpo:lineage", trial.number))


def _check_study(study, n_configs: int, epochs: int, eta: int = 3) -> dict[int, list]:
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    lineages: dict[int, list] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        lineages.setdefault(_lineage(trial), []).append(trial)
    assert len(lineages) == n_configs  # the budget counts configurations, exactly
    rungs: dict[int, dict[int, float]] = {0: {}, 1: {}}  # rung -> lineage -> value, from the curves
    for number, segments in lineages.items():
        last = segments[-1]
        assert last.state in (TrialState.COMPLETE, TrialState.PRUNED), (number, last.state)
        x = segments[0].params["x"]
        assert all(s.params == {"x": x} for s in segments)  # a promotion keeps its values
        for before, after in zip(segments, segments[1:]):  # each continuation resumes the one before
            assert after.user_attrs["hpo:resumes"] == before.number
            if before.state == TrialState.FAIL:  # stopped (handed back) and queued again
                assert before.user_attrs["hpo:run"]["retried"] and "paused_at" not in before.user_attrs["hpo:run"]
                continue
            paused_at = before.user_attrs["hpo:run"]["paused_at"]
            assert before.state == TrialState.PRUNED
            if after.state == TrialState.FAIL:  # the promotion was handed back before it ran
                continue
            assert after.user_attrs["hpo:run"]["resumed_steps"] == paused_at + 1  # from its checkpoint
            assert {s: v for s, v in after.intermediate_values.items() if s <= paused_at} == \
                before.intermediate_values  # one continuous curve
        curve = last.intermediate_values
        assert sorted(curve) == list(range(max(curve) + 1))  # every epoch trained once, none twice
        if last.state == TrialState.COMPLETE:
            assert max(curve) == epochs - 1 and last.value == pytest.approx(x * epochs)
        else:
            # paused at a rung (steps 1, 3); one whose run was handed back right at a rung decides
            # it at its first report after resuming
            assert last.user_attrs["hpo:run"]["paused_at"] == max(curve) >= 1
        for rung, step in ((0, 1), (1, 3)):
            if step in curve:
                rungs[rung][number] = curve[step]
    for rung, step in ((0, 1), (1, 3)):  # nothing that ranks in a rung's top share is left paused
        top = sorted(rungs[rung], key=lambda n: -rungs[rung][n])[: len(rungs[rung]) // eta]
        for number in top:
            assert max(lineages[number][-1].intermediate_values) > step, (rung, number)
    return lineages


def test_a_study_with_promotion_pauses_promotes_from_checkpoints_and_keeps_its_budget(store, tmp_path):
    """Trial 4's worker is killed (SIGKILL) after its first epoch: it is retried from its checkpoint."""
    spec = make_spec(objective="objectives:pbt_score", search_space=X, n_trials=9, direction="maximize",
                     pruner=ASHA, sampler="random", objective_args={"epochs": 6, "die_on_trial": 4})
    study = new_study(store, spec)
    driver, artifacts = _driver(spec, study, tmp_path)
    assert driver.run().state == JobState.COMPLETED
    lineages = _check_study(study, 9, 6)
    killed = next(t for t in study.trials if t.number == 4)
    assert killed.state == TrialState.FAIL and killed.user_attrs["hpo:run"]["retried"]
    retry = next(t for t in study.trials if t.user_attrs.get("hpo:retry_of") == 4)
    # it died right after the first epoch it trained (saved first): its retry goes on after that
    # epoch, with the curve so far copied in (the final curves are checked step by step above)
    resumed = retry.user_attrs["hpo:run"]["resumed_steps"]
    assert resumed >= 1 and set(range(resumed)) <= set(retry.intermediate_values)
    promoted = [n for n, segments in lineages.items() if any(s.state == TrialState.PRUNED for s in segments[:-1])]
    assert promoted  # at least one trial was paused and later promoted
    best = max(lineages, key=lambda n: lineages[n][0].params["x"])
    assert lineages[best][-1].state == TrialState.COMPLETE  # the best configuration trained to its end
    assert set(artifacts.lineages()) == {best}  # the study ended: only the best one's checkpoint is kept


def test_a_study_with_promotion_handed_back_finishes_exactly_on_the_next_run(store, tmp_path):
    flag = tmp_path / "stop-now"
    spec = make_spec(objective="objectives:pbt_score", search_space=X, n_trials=9, direction="maximize",
                     pruner=ASHA, sampler="random", objective_args={"epochs": 6, "stop_file": str(flag)})
    study = new_study(store, spec)
    stop = stop_when_file_appears(flag)
    driver, _ = _driver(spec, study, tmp_path, stop=stop)
    assert driver.run().state == JobState.INTERRUPTED
    flag.unlink()
    spec = make_spec(objective="objectives:pbt_score", search_space=X, n_trials=9, direction="maximize",
                     pruner=ASHA, sampler="random", objective_args={"epochs": 6})
    driver, _ = _driver(spec, study, tmp_path)
    assert driver.run().state == JobState.COMPLETED
    lineages = _check_study(study, 9, 6)
    stopped = [t for segments in lineages.values() for t in segments if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["hpo:stopped"] for t in stopped)  # handed back, not failed


@pytest.mark.parametrize("pruner, message", [
    ({"name": "median", "options": {"promotion": True}}, "'promotion' is for pruners"),
    ({"name": "hyperband", "options": {"promotion": True}}, "needs max_resource"),
    ({"name": "successive_halving", "options": {"promotion": True, "reduction_factor": 1}}, "reduction_factor"),
    ({"name": "successive_halving", "options": {"promotion": True, "max_resource": 9}}, "hyperband option"),
])
def test_bad_promotion_options_are_refused_with_one_line(pruner, message):
    with pytest.raises(HpoError) as caught:
        make_spec(objective="objectives:pbt_score", search_space=X, n_trials=4, pruner=pruner)
    assert message in str(caught.value) and "\n" not in str(caught.value)
