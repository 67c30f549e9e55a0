"""What asking one trial ahead of a free slot costs the search (hpo.run.ask_ahead).

Simulated time, real Optuna TPE: ``slots`` trials run at once, each for a random time (0.5-1.5);
a trial is asked either when a slot frees, after the result that freed it is told (as distributed
Optuna's processes do, and hpo's driver where asks are short against trials), or one trial ahead,
while every slot still runs (as hpo's driver did for every study before asks were weighed against
trial time, and still does where they are not). The same seeds run both
ways; the script prints, per function, the median regret (best value minus the known minimum)
and the paired difference of the two (ahead minus at-free; above 0: asking ahead did worse).

    python benchmarks/ask_ahead.py [--seeds 300] [--trials 40] [--slots 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
from collections.abc import Callable

import optuna

from workers.builtin.analytic import HARTMANN6_MIN, branin_value, hartmann6_value

BRANIN_MIN = 0.397887


def _hartmann6(trial: optuna.Trial) -> float:
    return hartmann6_value([trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(6)]) - HARTMANN6_MIN


def _branin(trial: optuna.Trial) -> float:
    return branin_value(trial.suggest_float("x1", -5.0, 10.0), trial.suggest_float("x2", 0.0, 15.0)) - BRANIN_MIN


FUNCTIONS: dict[str, Callable[[optuna.Trial], float]] = {"hartmann6": _hartmann6, "branin": _branin}


def regret(fn: Callable[[optuna.Trial], float], ahead: bool, seed: int, trials: int, slots: int) -> float:
    durations = random.Random(seed)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))
    asked = 0

    def ask() -> tuple[optuna.Trial, float]:
        nonlocal asked
        asked += 1
        trial = study.ask()
        return trial, fn(trial)

    running: list[tuple[float, int, optuna.Trial, float]] = []
    prepared: list[tuple[optuna.Trial, float]] = []

    def launch(now: float, trial: optuna.Trial, value: float) -> None:
        heapq.heappush(running, (now + durations.uniform(0.5, 1.5), trial.number, trial, value))

    for _ in range(min(slots, trials)):
        launch(0.0, *ask())
    if ahead and asked < trials:
        prepared.append(ask())
    while running:
        now, _, trial, value = heapq.heappop(running)
        study.tell(trial, value)
        if prepared:
            launch(now, *prepared.pop())
        elif asked < trials:
            launch(now, *ask())
        if ahead and asked < trials:
            prepared.append(ask())
    return study.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--json", help="write the regrets here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out = {}
    for name, fn in FUNCTIONS.items():
        at_free = [regret(fn, False, seed, args.trials, args.slots) for seed in range(args.seeds)]
        ahead = [regret(fn, True, seed, args.trials, args.slots) for seed in range(args.seeds)]
        diff = [b - a for a, b in zip(at_free, ahead)]
        error = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
        print(f"{name}: median regret asked at a free slot {statistics.median(at_free):.4f}, one ahead "
              f"{statistics.median(ahead):.4f}; ahead - at free {statistics.mean(diff):+.4f} +- {error:.4f} "
              f"(mean, s.e.), worse in {sum(d > 0 for d in diff)} of {len(diff)} seeds")
        out[name] = {"at_free": at_free, "ahead": ahead}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seeds": args.seeds, "trials": args.trials, "slots": args.slots, **out}, fh)


if __name__ == "__main__":
    main()
