"""Why Ray Tune's studies end higher on the heavy workload: hpo's study run six ways.

compare.py's heavy workload, hpo with the ``asha`` pruner (Ray Tune's ASHAScheduler rule, so
hpo and Ray Tune prune alike) on SQLite, each study a fresh `hpo run` process from the shell,
the variants rotating per seed:

  plain       the study as compare.py runs it: 2 trials at a time
  stopped     the same, but a stopped trial is told to the sampler as COMPLETE with its last
              reported value, as Ray Tune's OptunaSearch tells it (hpo and Optuna: PRUNED); the
              ``--variant-child`` process patches hpo's recorder for that, an experiment only
  sequential  1 trial at a time: TPE samples every trial knowing every earlier result
  paced       2 at a time, each trial first sleeping ``--pace`` seconds (default 3), about what a
              fresh process per trial costs Ray Tune here before its first epoch
  no-liar     2 at a time, TPE with ``constant_liar: false`` (Optuna 5's default is true: a
              running trial counts among the worst while it runs)
  at-free     2 at a time, every trial asked when a slot frees, as Optuna's and Ray Tune's are:
              hpo's driver otherwise asks one ahead where asks take 2 % or more of a trial's
              time (hpo/run/ask_ahead.py), which this workload's short pruned trials often meet;
              the child process patches that weighing to never, an experiment only

With 2 slots a trial is sampled while the other slot's trial still runs, so TPE does not know
that one's result. In hpo's warm workers a trial that trains all 8 epochs takes several times a
pruned one, so a promising trial stays unknown while the other slot runs several trials; in Ray
Tune every trial starts with seconds of process start-up, so trials are closer in length and
fewer are sampled blind to a running one. ``sequential`` removes that lag, ``paced`` makes it
Ray Tune's. Best value: the best final (8th epoch) accuracy of a trial that ran all epochs, as
compare.py counts it.

    python benchmarks/info_lag.py [--seeds 10] [--variants plain,stopped,sequential,paced]
        [--pace 3] [--out FILE.json]   (variants: plain,stopped,sequential,paced,no-liar,at-free)

Prints each study and, per variant, the median best and the mean difference from ``plain`` per
seed (+- standard error); writes every study's figures to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANTS = ("plain", "stopped", "sequential", "paced", "no-liar", "at-free")
PATCHED = ("stopped", "at-free")  # run by a child process of this script that patches hpo first
PACED_MODULE = '''"""heavy.objective after a fixed pause (info_lag.py's paced variant)."""
import time

import heavy


def objective(params, reporter, epochs=8, pace_s=0.0):
    time.sleep(pace_s)
    return heavy.objective(params, reporter, epochs=epochs)
'''


def stopped_as_complete() -> None:
    """Patch hpo's recorder in this process: a pruned trial is told COMPLETE with its last value."""
    from optuna.trial import TrialState

    from hpo.run import recorder

    def prune(self, trial, info):  # the same steps as StudyRecorder.prune, another tell
        def write():
            trial.set_user_attr(recorder.INFO_ATTR, info)
            values = self.storage.get_trial(recorder.id_of(trial)).intermediate_values
            return self._tell(trial, values[max(values)])

        return self._finish(recorder.id_of(trial), trial.number, TrialState.COMPLETE, None, write)

    recorder.StudyRecorder.prune = prune


def asks_at_free() -> None:
    """Patch hpo's driver in this process: never a trial asked ahead of a free slot."""
    from hpo.run.ask_ahead import AskAhead

    AskAhead.wanted = lambda self: False  # type: ignore[method-assign]


def child(variant: str, spec: str, storage: str) -> None:
    {"stopped": stopped_as_complete, "at-free": asks_at_free}[variant]()
    from hpo.cli import cli

    cli(["run", spec, "--storage", storage], standalone_mode=True)


def run_one(folder: Path, variant: str, seed: int, pace: float, epochs: int) -> dict:
    import compare
    import optuna

    cfg = compare.with_pruner(compare.workload_config("heavy", False, 1), "asha")
    if variant == "sequential":
        cfg["spec"]["max_concurrent_trials"] = 1
    if variant == "no-liar":
        cfg["spec"]["sampler"]["options"]["constant_liar"] = False
    if variant == "paced":
        cfg["spec"]["objective"] = "paced:objective"
        cfg["spec"]["objective_args"]["pace_s"] = pace
    spec = compare.write_spec(folder, f"heavy-{variant}", cfg, seed)
    storage = f"sqlite:///{folder / f'{variant}-{seed}.db'}"
    if variant in PATCHED:
        command = [sys.executable, str(Path(__file__).resolve()), "--variant-child", variant, str(spec), storage]
    else:
        command = [compare.HPO, "run", str(spec), "--storage", storage]
    env = {k: v for k, v in os.environ.items() if k not in compare.SCRUBBED}
    started = time.time()
    subprocess.run(command, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.time() - started
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=spec.stem, storage=storage)
    full = [t for t in study.trials if len(t.intermediate_values) == epochs]
    return {"variant": variant, "seed": seed, "best": max(t.intermediate_values[epochs - 1] for t in full),
            "full_trials": len(full),
            "asked_ahead": sum(t.user_attrs.get("hpo:run", {}).get("queued_s", 0) > 0 for t in study.trials),
            "told_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "epochs": sum(len(t.intermediate_values) for t in study.trials),
            "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--pace", type=float, default=3.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--variant-child", nargs=3, metavar=("VARIANT", "SPEC", "STORAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant_child:
        child(*args.variant_child)
        return
    import compare

    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    epochs = compare.workload_config("heavy", False, 1)["spec"]["objective_args"]["epochs"]
    studies: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="hpo-info-lag-") as tmp:
        folder = Path(tmp)
        for module in compare.OBJECTIVE_MODULES:
            (folder / module).write_text((HERE / module).read_text())
        (folder / "paced.py").write_text(PACED_MODULE)
        for seed in range(args.seeds):
            for i in range(len(variants)):
                variant = variants[(seed + i) % len(variants)]
                compare.wait_until_quiet()
                studies.append(run_one(folder, variant, seed, args.pace, epochs))
                print(json.dumps(studies[-1]), flush=True)
    best = {(s["variant"], s["seed"]): s["best"] for s in studies}
    summary = {}
    for variant in variants:
        mine = [s for s in studies if s["variant"] == variant]
        line = {"median_best": statistics.median(s["best"] for s in mine),
                "median_epochs": statistics.median(s["epochs"] for s in mine),
                "median_wall_s": statistics.median(s["wall_s"] for s in mine)}
        if variant != "plain" and "plain" in variants and args.seeds > 1:
            diffs = [best[(variant, seed)] - best[("plain", seed)] for seed in range(args.seeds)]
            line |= {"minus_plain": statistics.mean(diffs), "se": statistics.stdev(diffs) / math.sqrt(len(diffs)),
                     "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}
        summary[variant] = line
        print(variant, " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()))
    if args.out:
        args.out.write_text(json.dumps({"config": {"seeds": args.seeds, "variants": variants, "pace_s": args.pace,
                                                   "pruner": "asha", "store": "sqlite"},
                                        "summary": summary, "studies": studies}, indent=1) + "\n")


if __name__ == "__main__":
    main()
