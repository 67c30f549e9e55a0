"""Every run of a compare.py workload pooled, seed by seed: is a difference in best value between
two systems larger than the seed-to-seed noise that one 3-seed run cannot separate from it?

    python benchmarks/pooled.py [--workload heavy] [FILE.json ...]

Reads compare.py's results files (default: every docs/benchmarks/results*.json that holds the
workload), pairs the systems' studies that ran the same seed in the same run (the systems are
interleaved per seed, so a pair shares the machine's state), and prints per pair of systems:
how many pairs, the mean difference of best value with its standard error, how often the first
was better, equal, worse, and the same per seed (the same seeds recur across runs, so a seed
whose TPE run finds a good region for one system counts once per run: read the per-seed rows
before the pooled standard error), and the median ratio of wall times. hpo's studies of a
`compare.py --pruner asha` run count as another system, `hpo-sqlite[asha]`, paired with Ray Tune;
Ray Tune's studies of runs before c7117b3, whose trials all had the study's torch seed (hpo's and
Optuna's each have their own), count as `raytune[one seed]`. Until the peers took hpo's trial seeds
(results files whose `trial_seeds` say "hpo's"), Optuna's and Ray Tune's trials seeded torch with
seed + trial number, which is hpo's seed on seed 0 only: their studies of those runs count as
`optuna-sqlite[seed + n]` and so on, since on seeds 1 and 2 a configuration trained from other
initial weights and batch orders there than in hpo, the same ones in every run (a seed's luck
that pooling more runs does not average out).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
SEED_N = "[seed + n]"
PAIRS = (("hpo-sqlite", "optuna-sqlite"), ("hpo-postgres", "optuna-postgres"), ("hpo-ray-sqlite", "optuna-sqlite"),
         ("hpo-sqlite", "raytune"), ("hpo-postgres", "raytune"), ("optuna-sqlite", "raytune"),
         ("optuna-postgres", "raytune"), ("hpo-sqlite[asha]", "raytune"), ("hpo-postgres[asha]", "raytune"),
         ("hpo-sqlite", f"optuna-sqlite{SEED_N}"), ("hpo-postgres", f"optuna-postgres{SEED_N}"),
         ("hpo-ray-sqlite", f"optuna-sqlite{SEED_N}"),
         ("hpo-sqlite", f"raytune{SEED_N}"), ("hpo-postgres", f"raytune{SEED_N}"),
         (f"optuna-sqlite{SEED_N}", f"raytune{SEED_N}"), (f"optuna-postgres{SEED_N}", f"raytune{SEED_N}"),
         ("hpo-sqlite[asha]", f"raytune{SEED_N}"), ("hpo-postgres[asha]", f"raytune{SEED_N}"),
         ("hpo-sqlite", "raytune[one seed]"), ("hpo-postgres", "raytune[one seed]"),
         (f"optuna-sqlite{SEED_N}", "raytune[one seed]"), (f"optuna-postgres{SEED_N}", "raytune[one seed]"),
         ("hpo-sqlite[asha]", "raytune[one seed]"), ("hpo-postgres[asha]", "raytune[one seed]"))


def studies(paths: list[Path], workload: str) -> dict[tuple[str, int], dict[str, dict]]:
    """(run file, seed) -> system -> that seed's figures."""
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if workload not in data.get("workloads", {}):
            continue
        seeds = data["config"][workload]["seeds"]
        pruner = data["config"][workload]["spec"].get("pruner", {}).get("name", "none")
        for system, result in data["workloads"][workload].items():
            if system.startswith("hpo") and pruner == "asha":  # compare.py --pruner asha: another hpo
                system = f"{system}[asha]"
            peer = "raytune" if system == "raytune" else "optuna" if system.startswith("optuna") else None
            if system == "raytune" and "trial_seeds" not in data:  # before c7117b3: one seed for all trials
                system = "raytune[one seed]"
            elif peer and data.get("trial_seeds", {}).get(peer) != "hpo's":
                system = f"{system}{SEED_N}"
            for seed, figures in zip(seeds, result["seeds"]):
                out.setdefault((path.name, seed), {})[system] = figures
    return out


def compare(runs: dict[tuple[str, int], dict[str, dict]], a: str, b: str, sign: int) -> dict | None:
    """``a`` against ``b`` over the pairs that have both; ``sign`` 1 when larger is better."""
    both = {key: s for key, s in sorted(runs.items())
            if a in s and b in s and s[a].get("best") is not None and s[b].get("best") is not None}
    pairs = [(seed, s[a], s[b]) for (_, seed), s in both.items()]
    if len(pairs) < 2:
        return None
    diffs = [sign * (x["best"] - y["best"]) for _, x, y in pairs]
    by_seed: dict[int, list[float]] = {}
    for (seed, _, _), d in zip(pairs, diffs):
        by_seed.setdefault(seed, []).append(d)
    return {
        "pairs": len(pairs), "runs": len({run for run, _ in both}),
        "mean": statistics.mean(diffs), "se": statistics.stdev(diffs) / math.sqrt(len(diffs)),
        "better": sum(d > 0 for d in diffs), "equal": sum(d == 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
        "seeds": {seed: statistics.mean(ds) for seed, ds in sorted(by_seed.items())},
        "seeds_better": sum(statistics.mean(ds) > 0 for ds in by_seed.values()),
        "seeds_worse": sum(statistics.mean(ds) < 0 for ds in by_seed.values()),
        "wall_ratio": statistics.median(x["wall_s"] / y["wall_s"] for _, x, y in pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--workload", default="heavy")
    parser.add_argument("--minimize", action="store_true", help="the workload's best is a minimum")
    args = parser.parse_args()
    paths = args.files or sorted(RESULTS.glob("results*.json"))
    runs = studies(paths, args.workload)
    if not runs:
        raise SystemExit(f"no results of workload {args.workload!r} in {', '.join(map(str, paths))}")
    print(f"{args.workload}: {len({r for r, _ in runs})} runs, {len(runs)} run-seeds")
    sign = -1 if args.minimize else 1
    for a, b in PAIRS:
        c = compare(runs, a, b, sign)
        if c is None:
            continue
        seeds = ", ".join(f"{seed}: {d:+.4f}" for seed, d in c["seeds"].items())
        print(f"  {a} vs {b}: {c['pairs']} pairs in {c['runs']} runs; best {c['mean']:+.4f} +- {c['se']:.4f} "
              f"(better {c['better']}, equal {c['equal']}, worse {c['worse']}); by seed, better on "
              f"{c['seeds_better']} of {len(c['seeds'])}, worse on {c['seeds_worse']} ({seeds}); "
              f"median wall ratio {c['wall_ratio']:.2f}x")


if __name__ == "__main__":
    main()
