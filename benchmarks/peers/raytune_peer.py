"""Ray Tune as its users run it: one script from the shell that starts its own Ray runtime and
runs a Tuner with OptunaSearch (TPE, the spec's seed and options) and ASHAScheduler.

    python benchmarks/peers/raytune_peer.py --spec SPEC.yaml --storage-path DIR

ASHA's time attribute is the step as hpo and Optuna see it (0-based), so with the spec's
successive-halving options (min_resource 1, reduction_factor 3) its rungs are Optuna's rungs.
Prints one line ``RESULT {json}`` last: Ray's start-up time and each trial's start, end, steps,
last value, state and process id.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path

from common import load, pruner_options

TRIAL_NUMBER = "__trial_number"


class DefineByRun:
    """OptunaSearch samples the spec's space with hpo's own define-by-run sampling (picklable).
    The Optuna trial's number rides along in the config (a constant the trainable takes out), so
    that each trial gets the seed hpo would give it (workers.reporter.trial_seed)."""

    def __init__(self, space: dict) -> None:
        self.space = space

    def __call__(self, trial) -> dict:
        from hpo.spec.space import SearchSpace

        SearchSpace.model_validate(self.space).sample(trial)
        return {TRIAL_NUMBER: trial.number}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--storage-path", required=True)
    args = parser.parse_args()
    spec, fn, threads = load(args.spec)  # the driver loads the objective module, as hpo's does
    # Ray's workers inherit the environment: the objective module from the spec's folder, and
    # OMP_NUM_THREADS (set by load) before torch loads in them.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(args.spec).resolve().parent),
                                                             os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from workers.reporter import Reporter, trial_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    # "local": a new runtime of this script's own, never a cluster that `ray start` left running.
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    ray_start_s = time.time() - started

    seed = spec.get("seed", 0)
    objective_args = spec.get("objective_args", {})

    def trainable(config: dict) -> None:
        torch = sys.modules.get("torch")  # loaded with the objective's module when Ray unpickled this
        if torch is not None:
            torch.set_num_threads(threads)
        trial_start = time.time()

        def send(step: int, value: float) -> bool:
            tune.report({"value": value, "step": step, "t": time.time(), "t_start": trial_start, "pid": os.getpid()})
            return False  # ASHA stops the trial at a report when it prunes it

        params = dict(config)
        number = params.pop(TRIAL_NUMBER)
        fn(params, Reporter(trial_number=number, seed=trial_seed(seed, number), send=send), **objective_args)

    mode = "max" if spec.get("direction") == "maximize" else "min"
    name, options = pruner_options(spec)
    max_t = objective_args.get("epochs", objective_args.get("steps", 5))
    if name in ("successive_halving", "asha"):  # hpo's asha is this scheduler's rule exactly
        scheduler = ASHAScheduler(time_attr="step", max_t=max_t, grace_period=options.get("min_resource", 1),
                                  reduction_factor=options.get("reduction_factor", 4))
    elif name == "none":
        scheduler = FIFOScheduler()
    else:
        raise SystemExit(f"raytune peer: no ASHA equivalent of pruner {name!r}")
    sampler = optuna.samplers.TPESampler(seed=seed, **spec.get("sampler", {}).get("options", {}))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": spec.get("resources", {}).get("cpu", 1)}),
        tune_config=tune.TuneConfig(
            metric="value", mode=mode, num_samples=spec["n_trials"],
            max_concurrent_trials=spec["max_concurrent_trials"], scheduler=scheduler,
            search_alg=OptunaSearch(space=DefineByRun(spec["search_space"]), metric="value", mode=mode,
                                    sampler=sampler),
        ),
        run_config=tune.RunConfig(storage_path=args.storage_path, name=f"bench-{uuid.uuid4().hex[:8]}", verbose=0),
    )
    grid = tuner.fit()
    trials = []
    for result in grid:
        history = result.metrics_dataframe
        if result.error or history is None or not len(history):
            trials.append({"state": "fail"})
            continue
        steps = len(history)
        pruned = name != "none" and steps < max_t
        trials.append({
            "state": "pruned" if pruned else "complete", "steps": steps, "value": float(history["value"].iloc[-1]),
            "start": float(history["t_start"].iloc[0]), "end": float(history["t"].iloc[-1]),
            "pid": int(history["pid"].iloc[-1]),
        })
    ray.shutdown()
    print("RESULT " + json.dumps({"ray_start_s": round(ray_start_s, 3), "trials": trials}), flush=True)


if __name__ == "__main__":
    main()
