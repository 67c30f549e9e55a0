"""Search luck or a slower system? Per run of a compare.py workload whose objective logs its work
(heavy.py): how much work each system's search chose to train, and how long its processes took
per unit of that work.

    python benchmarks/work.py [--workload heavy] [FILE.json ...]

Within one run (every system's studies share the machine's state: they are interleaved per seed),
the time of each step trained (an epoch, from the previous report's return to the next report's
start: the system's wait for its answer left out) is fitted by least squares to the step's work
(heavy.py: optimizer steps, multiply-adds, parameters updated per optimizer), steps of every system
together. For each system and seed it then prints:

- ``work``: the fitted seconds of all steps its search trained (what the same steps would have
  taken on the run's average process), and that against the first system of the pair's seed;
- ``speed``: its steps' measured time over their fitted time (1.00 is the run's average; 1.10
  means its processes took 10 % longer for the same work).

A process's first step is left out of the fit and of ``speed`` (it pays torch's warm-up, which warm
workers pay once per study and Ray Tune once per trial: compare.py's wall and CPU count that). Results files without
logged work (older runs) are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
PAIRS = (("hpo-sqlite", "optuna-sqlite"), ("hpo-postgres", "optuna-postgres"), ("hpo-sqlite", "raytune"),
         ("hpo-postgres", "raytune"))


def fitted(seeds: dict[str, list[dict]]) -> tuple[dict[str, list[tuple[float, float]]], str] | None:
    """(system -> per seed (fitted s of all its steps, measured s / fitted s of its warm steps),
    a line on how well the fit explains single steps)."""
    names = sorted({n for runs in seeds.values() for r in runs for n in r["work_steps"]["features"]})

    def matrix(run: dict, warm_only: bool) -> tuple[np.ndarray, np.ndarray]:
        own = run["work_steps"]["features"]
        rows = [row for row in run["work_steps"]["rows"] if not (warm_only and row[1])]
        x = np.array([[1.0] + [dict(zip(own, row[2:])).get(n, 0.0) for n in names] for row in rows]).reshape(-1, len(names) + 1)
        return x, np.array([row[0] for row in rows])

    matrices = {system: [(matrix(run, warm_only=False)[0], *matrix(run, warm_only=True)) for run in runs]
                for system, runs in seeds.items()}
    x = np.vstack([warm_x for per_seed in matrices.values() for _, warm_x, _ in per_seed])
    y = np.concatenate([warm_y for per_seed in matrices.values() for _, _, warm_y in per_seed])
    if len(y) <= len(names) + 1:
        return None
    scale = np.where(x.max(axis=0) > 0, x.max(axis=0), 1.0)  # the features span orders of magnitude
    coef = np.linalg.lstsq(x / scale, y, rcond=None)[0] / scale
    predicted_steps = x @ coef
    r2 = 1 - float(((y - predicted_steps) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    error = float(np.median(np.abs(y / predicted_steps - 1)))
    quality = (f"fit over {len(y)} warm steps of {len(names)} work terms: R^2 {r2:.2f}, a single step "
               f"{100 * error:.0f} % off its fitted time (median)")
    out: dict[str, list[tuple[float, float]]] = {}
    for system, per_seed in matrices.items():
        out[system] = []
        for all_x, warm_x, warm_y in per_seed:
            predicted = float((warm_x @ coef).sum())
            speed = float(warm_y.sum()) / predicted if predicted > 0 else float("nan")
            out[system].append((float((all_x @ coef).sum()), speed))
    return out, quality


def report(path: Path, workload: str) -> list[str]:
    data = json.loads(path.read_text())
    results = data.get("workloads", {}).get(workload)
    if not results:
        return []
    seeds = {system: r["seeds"] for system, r in results.items() if all("work_steps" in s for s in r["seeds"])}
    if len(seeds) < 2:
        return []
    done = fitted(seeds)
    if done is None:
        return []
    fit, quality = done
    numbers = data["config"][workload]["seeds"]
    lines = [f"{path.name} ({workload}, seeds {', '.join(map(str, numbers))}): {quality}",
             f"  {'system':<16} {'work s per seed':<28} {'speed per seed':<24} speed median"]
    for system, per_seed in fit.items():
        work = " ".join(f"{w:7.1f}" for w, _ in per_seed)
        speed = " ".join(f"{s:5.2f}" for _, s in per_seed)
        lines.append(f"  {system:<16} {work:<28} {speed:<24} {statistics.median(s for _, s in per_seed):.2f}")
    for a, b in PAIRS:
        if a in fit and b in fit:
            work = " ".join(f"{wa / wb:5.2f}x" for (wa, _), (wb, _) in zip(fit[a], fit[b]))
            speed = " ".join(f"{sa / sb:5.2f}x" for (_, sa), (_, sb) in zip(fit[a], fit[b]))
            lines.append(f"  {a} / {b}: work {work}; speed {speed}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--workload", default="heavy")
    args = parser.parse_args()
    paths = args.files or sorted(RESULTS.glob("results*.json"))
    lines = [line for path in paths for line in report(path, args.workload)]
    if not lines:
        raise SystemExit(f"no run of workload {args.workload!r} with logged work in {', '.join(map(str, paths))}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
