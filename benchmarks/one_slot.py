"""hpo and Optuna with one slot, trial by trial: is hpo's search Optuna's?

    python benchmarks/one_slot.py [--seeds 3] [--trials 40] [--smoke]

The heavy workload of compare.py (the same spec, objective and torch seed per trial), run with
one trial at a time, from the shell, cold: `hpo run SPEC` and one `python peers/optuna_peer.py`
process (after `optuna create-study`), each on its own SQLite file. With one slot there is no
timing left to differ: a seeded TPE study must then ask the same parameters, store the same
reports, prune at the same steps and end with the same values in both. The script compares the
two stores trial by trial and prints, per seed, how many trials agree, the first that does not
(if any), each best value and each wall time. Exit status 1 when a seed differs.

With two or more slots the systems do differ (compare.py): distributed Optuna runs one sampler
per process (seeds seed and seed + 1) and neither order of trials nor the set of trials still
running when one is asked is the same from run to run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import optuna
import yaml
from compare import (
    HERE,
    OBJECTIVE_MODULES,
    SCRUBBED,
    run_hpo,
    run_optuna,
    workload_config,
    write_spec,
)


def differences(url_a: str, url_b: str, name: str) -> tuple[int, list[str]]:
    """(trials compared, a line per trial that differs in parameters, state, reports or value)."""
    a = optuna.load_study(study_name=name, storage=url_a).get_trials(deepcopy=False)
    b = optuna.load_study(study_name=name, storage=url_b).get_trials(deepcopy=False)
    lines = [f"hpo ran {len(a)} trials, Optuna {len(b)}"] if len(a) != len(b) else []
    for x, y in zip(a, b):
        for what, ours, theirs in (("params", x.params, y.params), ("state", x.state.name, y.state.name),
                                   ("reports", x.intermediate_values, y.intermediate_values),
                                   ("value", x.value, y.value)):
            if ours != theirs:
                lines.append(f"trial {x.number}: {what} {ours!r} (hpo) against {theirs!r} (Optuna)")
                break
    return min(len(a), len(b)), lines


def best(url: str, name: str) -> float:
    return optuna.load_study(study_name=name, storage=url).best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40, help="trials per study (compare.py's heavy runs 40)")
    parser.add_argument("--smoke", action="store_true", help="2 epochs, 6 trials, one seed")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = workload_config("heavy", args.smoke, 1 if args.smoke else args.seeds)
    cfg["spec"].update(max_concurrent_trials=1, n_trials=6 if args.smoke else args.trials)
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    differing = 0
    with tempfile.TemporaryDirectory(prefix="hpo-one-slot-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "study").mkdir()
        for module in OBJECTIVE_MODULES:
            shutil.copy(HERE / module, tmp / "study" / module)
        env["HPO_ARTIFACTS"] = str(tmp / "artifacts")
        for seed in cfg["seeds"]:
            spec_path = write_spec(tmp / "study", "heavy", cfg, seed)
            spec = yaml.safe_load(spec_path.read_text())
            urls = {system: f"sqlite:///{tmp / f'{system}-s{seed}.db'}" for system in ("hpo", "optuna")}
            hpo_done, _, _ = run_hpo(spec_path, spec, urls["hpo"], env, tmp, timeout_s=3600)
            optuna_done, _, _ = run_optuna(spec_path, spec, urls["optuna"], env, tmp, timeout_s=3600)
            compared, lines = differences(urls["hpo"], urls["optuna"], spec["name"])
            differing += bool(lines)
            agree = compared - len([line for line in lines if line.startswith("trial ")])
            print(f"seed {seed}: {agree} of {compared} trials the same in both; best {best(urls['hpo'], spec['name']):.4f} "
                  f"(hpo) and {best(urls['optuna'], spec['name']):.4f} (Optuna); wall {hpo_done.wall_s:.1f} s and "
                  f"{optuna_done.wall_s:.1f} s", flush=True)
            for line in lines[:5]:
                print(f"  {line}")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
