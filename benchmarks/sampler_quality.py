"""Benchmark: TPE at 100 trials against random search at 200 on Hartmann6 (issue 2/7).

Each study runs through hpo itself (driver, Ray workers, SQLite store). The regret of a study is
its best value minus Hartmann6's global minimum (-3.32237); the script prints the median regret
over the seeds for each sampler.

    python benchmarks/sampler_quality.py [--seeds 10] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import hpo  # noqa: F401  (Ray's auth mode before Ray loads)

# isort: split
import optuna
import ray

from hpo import api
from hpo.spec.study import parse_spec
from workers.builtin.analytic import HARTMANN6_MIN

SAMPLERS = {
    "tpe": ({"name": "tpe", "options": {"multivariate": True, "n_startup_trials": 10}}, 100),
    "random": ({"name": "random"}, 200),
}


def regret(sampler: dict, n_trials: int, seed: int, storage: str) -> float:
    spec = parse_spec(
        {
            "name": f"h6-{sampler['name']}-{seed}",
            "objective": "builtin:hartmann6",
            "objective_args": {"steps": 1},
            "search_space": "hartmann6",
            "sampler": sampler,
            "n_trials": n_trials,
            "max_concurrent_trials": 2,
            "seed": seed,
        },
        base_dir=Path.cwd(),
    )
    summary = api.run(spec, storage=storage)
    return summary.best_value - HARTMANN6_MIN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    results: dict[str, list[float]] = {name: [] for name in SAMPLERS}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/quality.db"
        for seed in range(args.seeds):
            for name, (sampler, n_trials) in SAMPLERS.items():
                results[name].append(regret(sampler, n_trials, seed, storage))
            print(f"seed {seed}: " + ", ".join(f"{n}={r[-1]:.4f}" for n, r in results.items()), flush=True)
    report = {
        "function": "hartmann6",
        "budget": {name: n for name, (_, n) in SAMPLERS.items()},
        "median_regret": {name: statistics.median(r) for name, r in results.items()},
        "regrets": results,
        "wall_s": round(time.time() - started, 1),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()
