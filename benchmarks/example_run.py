"""Benchmark: wall time and CPU use of `hpo run examples/digits-mlp.yaml` (issue 1/7).

Runs the installed console script on a fresh SQLite store, samples /proc/stat every 0.25 s, and
reports the wall time (start-up and shut-down included) and how busy the cores were while trials ran
(from the first trial's start to the last trial's end, read back from the store).

    python benchmarks/example_run.py [--repeat 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "digits-mlp.yaml"


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies over all cores."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Sampler(threading.Thread):
    def __init__(self, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.period, self.samples, self.stop = period, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), *cpu_times()))
            time.sleep(self.period)

    def busy_between(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (_, b0, t0), (_, b1, t1) = inside[0], inside[-1]
        return (b1 - b0) / (t1 - t0)


def one_run(workdir: Path) -> dict:
    db = workdir / f"bench-{time.time_ns()}.db"
    hpo = Path(sys.executable).parent / "hpo"
    sampler = Sampler()
    sampler.start()
    started = time.time()
    result = subprocess.run([str(hpo), "run", str(EXAMPLE), "--storage", f"sqlite:///{db}", "--json"],
                            capture_output=True, text=True)
    wall = time.time() - started
    sampler.stop.set()
    sampler.join()
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    summary = json.loads(result.stdout)
    trials = optuna.load_study(study_name=summary["study_name"], storage=f"sqlite:///{db}").trials
    first = min(t.datetime_start for t in trials).timestamp()
    last = max(t.datetime_complete for t in trials).timestamp()
    return {
        "wall_s": round(wall, 2),
        "trials_phase_s": round(last - first, 2),
        "cpu_busy_during_trials": round(sampler.busy_between(first, last), 3),
        "cpu_busy_whole_run": round(sampler.busy_between(started, started + wall), 3),
        "complete": summary["complete"],
        "pruned": summary["pruned"],
        "best_value": summary["best_value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs.append(one_run(Path(tmp)))
            print(f"run {i + 1}: {runs[-1]}", flush=True)
    walls = sorted(r["wall_s"] for r in runs)
    report = {"cores": os.cpu_count(), "median_wall_s": walls[len(walls) // 2], "runs": runs}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
