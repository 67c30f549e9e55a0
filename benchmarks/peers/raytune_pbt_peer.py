"""Ray Tune's Population Based Training as its users run it: one script from the shell that starts
its own Ray runtime and runs a Tuner with ``PopulationBasedTraining`` on the objective and options
of an hpo PBT spec (``schedule: {name: pbt, options: ...}``).

    python benchmarks/peers/raytune_pbt_peer.py --spec SPEC.yaml --storage-path DIR

What maps onto what: ``num_samples`` = population; ``perturbation_interval`` = interval, counted
in epochs trained (``time_attr`` "epochs", the objective's step + 1, so perturbations fall where
hpo's segments end); ``quantile_fraction``, ``resample_probability``, ``perturbation_factors``
as given; ``hyperparam_mutations`` = the spec's search space for the mutated parameters
(``tune.loguniform`` for log floats); ``synch=True``, since hpo's generations are synchronous
(Ray's default is asynchronous). The spec's seed seeds Python's and NumPy's global generators
(Ray's PBT draws its exploits and perturbations from ``random``) and the initial sampling.
The objective runs unchanged through a small reporter adapter: ``save_checkpoint`` writes the
state into a folder that goes with the next ``tune.report``, ``load_checkpoint`` reads
``tune.get_checkpoint()`` (a paused trial's own, or the donor's after an exploit).

Actors are reused (``reuse_actors=True``), as Ray's warning advises for PBT ("Consider boosting
PBT performance by enabling `reuse_actors`"); ``--no-reuse-actors`` runs Ray's default instead.

Concurrency: Ray gets ``max_concurrent_trials x cpu`` CPUs and each trial ``cpu``, so that many
trials run at once and the rest wait, PAUSED or PENDING, as Ray's PBT docs run a population
larger than the cluster. (``TuneConfig(max_concurrent_trials=...)`` is not used: its limiter
counts paused trials as live and would shrink the population to that many members.)

Prints one line ``RESULT {json}`` last: Ray's start-up seconds, the best final value (over the
members that trained to the last epoch), epochs trained (the objective's reports, summed over
trials and restarts, from the objective's benchlog file: HPO_BENCH_LOG, else one in DIR),
the processes that trained, and each trial's state, last step, last value and final lr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import load


class TuneReporter:
    """hpo's reporter API on top of Ray Tune's session (checkpoints, reports)."""

    def __init__(self, seed: int, trial_number: int) -> None:
        self.seed, self.trial_number, self.device = seed, trial_number, "cpu"
        self.checkpoint_step: int | None = None
        self.metrics: dict[str, float] = {}
        self._folder: str | None = None  # the checkpoint saved for the next report
        self._saved_step: int | None = None

    def load_checkpoint(self):
        import torch
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", weights_only=False)
            self.checkpoint_step = int((Path(folder) / "step").read_text())
        return state

    def save_checkpoint(self, state, step: int | None = None) -> bool:
        import torch

        self._drop()
        self._folder = tempfile.mkdtemp(prefix="pbt-ckpt-")
        torch.save(state, Path(self._folder) / "state.pt")
        (Path(self._folder) / "step").write_text(str(step))
        self._saved_step = step
        return True

    def log(self, **metrics) -> None:
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def report(self, step: int, value: float) -> None:
        from ray import tune

        checkpoint = None
        if self._folder is not None and self._saved_step == step:
            checkpoint = tune.Checkpoint.from_directory(self._folder)
        tune.report({"value": float(value), "step": int(step), "epochs": int(step) + 1, **self.metrics},
                    checkpoint=checkpoint)
        if checkpoint is not None:  # persisted by the report: the temporary copy can go
            self._drop()

    def _drop(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--storage-path", required=True)
    parser.add_argument("--no-reuse-actors", action="store_true", help="a new actor per start (Ray's default)")
    args = parser.parse_args()
    # the objective logs a line per epoch trained there (benchlog; the harness's file when it set one)
    Path(args.storage_path).mkdir(parents=True, exist_ok=True)
    log = Path(os.environ.setdefault("HPO_BENCH_LOG", str(Path(args.storage_path) / f"epochs-{uuid.uuid4().hex[:8]}.log")))
    spec, fn, threads = load(args.spec)  # the driver loads the objective module, as hpo's does
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(args.spec).resolve().parent),
                                                             os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    schedule = spec.get("schedule") or {}
    if schedule.get("name") != "pbt":
        raise SystemExit("raytune pbt peer: the spec needs schedule: {name: pbt, options: ...}")
    options = {"population": 8, "interval": 2, "quantile": 0.25, "resample_probability": 0.25,
               "perturb": [0.8, 1.2], **(schedule.get("options") or {})}

    import numpy as np
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from workers.reporter import trial_seed  # the seed hpo gives the trial

    seed = int(spec.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed)

    def domain(param: dict):
        if param["type"] == "float":
            return (tune.loguniform if param.get("log") else tune.uniform)(param["low"], param["high"])
        if param["type"] == "int":
            return (tune.lograndint if param.get("log") else tune.randint)(param["low"], param["high"] + 1)
        return list(param["choices"])

    space = spec["search_space"]
    mutations = {name: domain(space[name]) for name in options.get("mutations") or
                 [n for n, p in space.items() if p["type"] != "categorical" and not p.get("when")]}
    param_space = {name: (tune.choice(d) if isinstance(d, list) else d)
                   for name, d in ((n, domain(p)) for n, p in space.items())}
    cpu = spec.get("resources", {}).get("cpu", 1)
    slots = int(spec.get("max_concurrent_trials", 2))

    started = time.time()
    # "local": a new runtime of this script's own, never a cluster that `ray start` left running.
    ray.init(address="local", num_cpus=max(1, int(slots * cpu)), include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    ray_start_s = time.time() - started

    objective_args = spec.get("objective_args", {})
    epochs = int(objective_args.get("epochs", 12))

    def trainable(config: dict) -> None:
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        number = int(tune.get_context().get_trial_id().rsplit("_", 1)[-1])
        # the trial's seed as hpo derives it from the study seed and the trial number
        reporter = TuneReporter(seed=trial_seed(seed, number), trial_number=number)
        fn(dict(config), reporter, **objective_args)

    mode = "max" if spec.get("direction") == "maximize" else "min"
    scheduler = PopulationBasedTraining(
        time_attr="epochs", perturbation_interval=options["interval"], hyperparam_mutations=mutations,
        quantile_fraction=options["quantile"], resample_probability=options["resample_probability"],
        perturbation_factors=tuple(options["perturb"]), synch=True,
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpu}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="value", mode=mode, num_samples=options["population"],
                                    scheduler=scheduler, search_alg=BasicVariantGenerator(random_state=seed),
                                    reuse_actors=not args.no_reuse_actors),
        run_config=tune.RunConfig(storage_path=args.storage_path, name=f"pbt-{uuid.uuid4().hex[:8]}", verbose=0,
                                  stop={"epochs": epochs}),
    )
    grid = tuner.fit()
    trials, finals = [], []
    for result in grid:
        metrics = result.metrics or {}
        if result.error or "value" not in metrics:
            trials.append({"state": "fail", "error": str(result.error)[:300] if result.error else None})
            continue
        last_step = int(metrics["step"])
        trials.append({"state": "complete" if last_step == epochs - 1 else "stopped", "steps": last_step + 1,
                       "value": float(metrics["value"]), "lr": result.config.get("lr")})
        if last_step == epochs - 1:
            finals.append(float(metrics["value"]))
    ray.shutdown()
    best = (max if mode == "max" else min)(finals) if finals else None
    lines = log.read_text().splitlines() if log.exists() else []
    epochs_trained = sum(line.startswith("report ") for line in lines)
    processes = len({line.split()[1] for line in lines if line.startswith("report ")})
    print("RESULT " + json.dumps({"ray_start_s": round(ray_start_s, 3), "best": best, "epochs_trained": epochs_trained,
                                  "processes": processes, "trials": trials}), flush=True)


if __name__ == "__main__":
    main()
