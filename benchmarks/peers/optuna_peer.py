"""Distributed Optuna as its documentation shows it: start this script once per slot, from the
shell, on a study created beforehand in a shared RDB storage.

    python benchmarks/peers/optuna_peer.py --spec SPEC.yaml --storage URL --study NAME --rank R

Each process loads the study with its own TPE sampler (seed + rank, the spec's options) and the
spec's pruner, and runs ``study.optimize`` until the study holds the spec's n_trials finished
trials (MaxTrialsCallback). The objective is called through hpo's Reporter, whose ``send`` is
``trial.report`` + ``trial.should_prune``, so it is the code hpo runs.
"""

from __future__ import annotations

import argparse

from common import load, pruner_options

PRUNERS = {"successive_halving": "SuccessiveHalvingPruner", "median": "MedianPruner", "none": "NopPruner"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--rank", type=int, default=0)
    args = parser.parse_args()
    spec, fn, _ = load(args.spec)  # threads pinned and the objective module loaded, as in hpo's workers

    import optuna

    from hpo.spec.space import SearchSpace
    from workers.reporter import Pruned, Reporter, trial_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.get("seed", 0)
    sampler_options = spec.get("sampler", {}).get("options", {})
    name, options = pruner_options(spec)
    study = optuna.load_study(
        study_name=args.study, storage=args.storage,
        sampler=optuna.samplers.TPESampler(seed=seed + args.rank, **sampler_options),
        pruner=getattr(optuna.pruners, PRUNERS[name])(**options),
    )
    space = SearchSpace.model_validate(spec["search_space"])
    objective_args = spec.get("objective_args", {})

    def objective(trial: optuna.Trial) -> float:
        params = space.sample(trial)

        def send(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        try:
            return fn(params, Reporter(trial_number=trial.number, seed=trial_seed(seed, trial.number), send=send),
                      **objective_args)
        except Pruned:
            raise optuna.TrialPruned() from None

    n_trials = spec["n_trials"]
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(objective, n_trials=n_trials, callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=finished)])


if __name__ == "__main__":
    main()
