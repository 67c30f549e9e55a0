"""Benchmark: epochs trained again after worker kills, with and without checkpoints (issue 18).

A 20-trial study of the builtin MLP (digits, 10 epochs per trial, random sampler, 2 trials at
a time) run as users run it: `hpo run SPEC --backend local` from the shell, a fresh process and
a fresh SQLite store per run. Three trials' worker processes are killed (SIGKILL) right after
epoch 6; each is retried with the same parameters. With checkpoints (the builtin's default) the
retry continues at epoch 7; with ``resume: false`` it trains from epoch 0 again. Reported per
run: epochs trained in all (20 x 10 = 200 is the minimum), epochs trained again, wall time and
the CPU seconds of the whole process tree. (A kill in the middle of an epoch loses that epoch as
well: at most one more per kill.)

    python benchmarks/resume.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
KILL_TRIALS = [3, 9, 15]
SPEC = """\
name: resume-{mode}-{seed}
objective: killed_mlp:objective
objective_args: {{log: "{log}", kill_trials: {kills}, resume: {resume}}}
search_space: mlp
sampler: random
n_trials: 20
max_concurrent_trials: 2
seed: {seed}
"""


def one_run(workdir: Path, mode: str, seed: int) -> dict:
    log = workdir / f"{mode}-{seed}.log"
    spec = workdir / f"{mode}-{seed}.yaml"
    spec.write_text(SPEC.format(mode=mode, seed=seed, log=log, kills=KILL_TRIALS,
                                resume="true" if mode == "checkpoints" else "false"))
    # the objective module lives in benchmarks/: the spec names it relative to its folder
    (workdir / "killed_mlp.py").write_text((BENCH / "killed_mlp.py").read_text())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "hpo"), "run", str(spec), "--backend", "local",
                             "--storage", f"sqlite:///{workdir}/{mode}-{seed}.db", "--json"],
                            capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"hpo run failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    trained = len(log.read_text().splitlines())
    return {"mode": mode, "seed": seed, "epochs": trained, "retrained": trained - 20 * 10,
            "wall_s": round(wall, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for mode in ("checkpoints", "no-checkpoints"):  # interleaved per seed
                rows.append(one_run(Path(tmp), mode, seed))
                print(json.dumps(rows[-1]), flush=True)
    print("\n| run | seed | epochs trained | trained again (3 kills) | wall s | CPU-s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seed']} | {r['epochs']} | {r['retrained']} | {r['wall_s']} | {r['cpu_s']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
