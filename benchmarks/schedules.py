"""Benchmark: schedules that change while trials train. hpo's PBT and PB2 against TPE + ASHA at
equal compute, and against Ray Tune's PBT on the same workload and budget, side by side.

Workload: schedule_cnn.py, a small CNN on 8x8 digits with 30 % label noise and 600 training
images, SGD at a constant rate per segment, the negative validation cross-entropy as the value
(maximize). There a high rate early and a low one late beats every constant rate (run
``python benchmarks/schedule_cnn.py`` to see it), so a method that changes the rate while
training (PBT) can beat the best fixed rate, which is all TPE + ASHA can find.

Systems, each a fresh, cold process from the shell on the same spec file (written to a temp dir
next to copies of schedule_cnn.py and benchlog.py), per seed, the order rotating by seed:

  hpo-pbt       `hpo run SPEC --json`, schedule {name: pbt, options: population, interval,
                quantile 0.25, resample_probability 0.25, perturb [0.8, 1.2], mutations [lr]}
  hpo-pb2       the same with name: pb2 (a GP bandit explores lr)
  hpo-pbt-ray   hpo-pbt with `--backend ray` (its own Ray runtime, as Ray Tune has): `hpo run`
                without it uses local worker processes on one machine with no GPU asked
  hpo-tpe-asha  `hpo run SPEC --json`, TPE and successive halving (min_resource 1,
                reduction_factor 3: Optuna's asynchronous SH, i.e. ASHA), n_trials chosen so that
                it trains about as many epochs as PBT (population x epochs): the n_trials whose
                expected epochs, simulated with Optuna's promotion rule (checks at steps 1, 3,
                9, ...; the first trials at a rung always go on), come closest to that budget.
                The epochs it actually trained are printed next to PBT's.
  hpo-asha-promotion  the same with `promotion: true`: a trial that is not in a rung's top third
                pauses there (checkpoint kept) and is promoted later if it ranks there then;
                n_trials counts configurations, so it may train more epochs than hpo-tpe-asha.
  raytune-pbt   `python peers/raytune_pbt_peer.py`: its own ray.init, a Tuner with Ray Tune's
                PopulationBasedTraining (synchronous) on the same options (see that script)

All on one search space (lr, log-uniform in [1e-3, 0.3]), 2 trials at a time, 1 CPU each (1
thread). PBT's options include ``steps`` (the epochs), as Ray Tune's run stops at them. Per
run: wall time from the shell (start to exit), the machine's CPU-seconds meanwhile
(/proc/stat: every process, Ray's daemons too; run it on a quiet machine), the best value (PBT,
PB2, Ray's PBT: the best member's value at the last epoch; TPE + ASHA: the best trial that
trained to the last epoch), epochs trained (the objective's own count: one benchlog line per
epoch, whatever system ran it), trials (hpo: Optuna trials, i.e. PBT segments; Ray: trials) and
the processes that trained. For hpo's PBT/PB2 also the lr schedule of the best member.

    python benchmarks/schedules.py [--seeds 0 1 2] [--smoke] [--out DIR]
        [--systems hpo-pbt,hpo-pb2,hpo-tpe-asha,raytune-pbt] [--population 8] [--epochs 12]
        [--interval 2]

--smoke: population 4, 4 epochs, one seed (about two minutes on 2 cores). Writes
DIR/results.json (every run, and the medians over seeds) and prints a markdown table of the
medians, each seed's figures, and the issue's targets (met or not).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import CommandFailed, read_log, run_from_shell  # noqa: E402

HPO = str(Path(sys.executable).with_name("hpo")) if Path(sys.executable).with_name("hpo").exists() else "hpo"
OBJECTIVE_MODULES = ("schedule_cnn.py", "benchlog.py")
ALL_SYSTEMS = "hpo-pbt,hpo-pb2,hpo-pbt-ray,hpo-tpe-asha,hpo-asha-promotion,raytune-pbt"
SPACE = {"lr": {"type": "float", "low": 1.0e-3, "high": 0.3, "log": True}}
SHA = {"min_resource": 1, "reduction_factor": 3}
# Environment a user's shell would not hand these commands (the harness's own, a cluster to join).
SCRUBBED = ("RAY_ADDRESS", "HPO_RAY_ADDRESS", "HPO_BACKEND", "HPO_STORAGE", "HPO_BENCH_LOG", "OMP_NUM_THREADS")


def sha_epochs(n_trials: int, epochs: int, min_resource: int, reduction_factor: int, reps: int = 200) -> float:
    """Epochs that ``n_trials`` trials train, on average, under Optuna's successive halving as hpo
    runs it: a trial is checked at steps (0-based) min_resource x rf^k below ``epochs`` and goes
    on when its value is in the top 1/rf of those that reached that step (the first rf - 1 to
    reach it: when it is the best so far). Simulated with trials one after another whose values
    keep their order at every rung (random, seeded)."""
    rng = random.Random(0)
    rungs = []
    step = min_resource
    while step < epochs - 1:  # a check at the last step stops nothing
        rungs.append(step)
        step *= reduction_factor
    total = 0
    for _ in range(reps):
        seen: list[list[float]] = [[] for _ in rungs]
        for _ in range(n_trials):
            value, trained = rng.random(), epochs
            for k, rung in enumerate(rungs):
                seen[k].append(value)
                ranked = sorted(seen[k], reverse=True)
                if value < ranked[max(0, len(ranked) // reduction_factor - 1)]:
                    trained = rung + 1
                    break
            total += trained
    return total / reps


def asha_n_trials(budget: int, epochs: int, min_resource: int, reduction_factor: int) -> int:
    """The n_trials whose expected epochs under successive halving come closest to ``budget``."""
    n = 1
    while sha_epochs(n + 1, epochs, min_resource, reduction_factor) <= budget:
        n += 1
    over = sha_epochs(n + 1, epochs, min_resource, reduction_factor) - budget
    return n + 1 if over < budget - sha_epochs(n, epochs, min_resource, reduction_factor) else n


def specs(population: int, epochs: int, interval: int, seed: int) -> dict[str, dict[str, Any]]:
    base = {"objective": "schedule_cnn:objective", "objective_args": {"epochs": epochs}, "search_space": SPACE,
            "direction": "maximize", "seed": seed, "max_concurrent_trials": 2, "resources": {"cpu": 1},
            "max_retries": 0}
    pbt = {"population": population, "interval": interval, "quantile": 0.25, "resample_probability": 0.25,
           "perturb": [0.8, 1.2], "mutations": ["lr"], "steps": epochs}
    n_trials = asha_n_trials(population * epochs, epochs, SHA["min_resource"], SHA["reduction_factor"])
    tpe = {"name": "tpe", "options": {"n_startup_trials": min(10, n_trials // 3)}}
    return {
        "hpo-pbt": {**base, "schedule": {"name": "pbt", "options": pbt}},
        "hpo-pb2": {**base, "schedule": {"name": "pb2", "options": pbt}},
        "hpo-pbt-ray": {**base, "schedule": {"name": "pbt", "options": pbt}},
        "hpo-tpe-asha": {**base, "sampler": tpe, "pruner": {"name": "successive_halving", "options": SHA},
                         "n_trials": n_trials},
        "hpo-asha-promotion": {**base, "sampler": tpe, "n_trials": n_trials,
                               "pruner": {"name": "successive_halving", "options": {**SHA, "promotion": True}}},
        "raytune-pbt": {**base, "schedule": {"name": "pbt", "options": pbt}},
    }


# ---------------------------------------------------------------------------- one run


def hpo_best(url: str, name: str, epochs: int) -> tuple[float | None, int, list | None]:
    """(best value at the last epoch, Optuna trials, the best PBT member's lr schedule)."""
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    finals = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
              and (epochs - 1) in t.intermediate_values]
    if not finals:
        return None, len(trials), None
    best = max(finals, key=lambda t: t.value)
    schedule, trial = [], best
    while trial is not None and "hpo:pbt" in trial.user_attrs:  # follow the segments back to the start
        segment = trial.user_attrs["hpo:pbt"]
        schedule.append([segment["start"], round(trial.params["lr"], 5)])
        trial = by_number.get(segment.get("parent"))
    return best.value, len(trials), (schedule[::-1] or None)


def run_one(system: str, spec: dict, tmp: Path, timeout_s: float) -> dict:
    name = f"{system}-s{spec['seed']}-{uuid.uuid4().hex[:6]}"
    spec_path = tmp / "study" / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump({"name": name, **spec}, sort_keys=False))
    log_path = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | {"HPO_BENCH_LOG": str(log_path)}
    epochs = spec["objective_args"]["epochs"]
    extra: dict[str, Any] = {}
    if system == "raytune-pbt":
        command = [sys.executable, str(HERE / "peers" / "raytune_pbt_peer.py"), "--spec", str(spec_path),
                   "--storage-path", str(tmp / "raytune")]
        done = run_from_shell([command], env=env, cwd=tmp, timeout_s=timeout_s)
        lines = [line for line in done.stdouts[0].splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise CommandFailed(f"raytune pbt peer printed no RESULT line:\n{done.stdouts[0][-2000:]}")
        result = json.loads(lines[-1].removeprefix("RESULT "))
        best, trials = result["best"], len(result["trials"])
        extra = {"ray_start_s": result["ray_start_s"],
                 "failed": sum(t["state"] == "fail" for t in result["trials"])}
    else:
        url = f"sqlite:///{tmp / (name + '.db')}"
        backend = ["--backend", "ray"] if system.endswith("-ray") else []
        done = run_from_shell([[HPO, "run", str(spec_path), "--storage", url, "--json", *backend]], env=env, cwd=tmp,
                              timeout_s=timeout_s)
        best, trials, schedule = hpo_best(url, name, epochs)
        study = optuna.load_study(study_name=name, storage=url)
        extra = {"failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.get_trials(deepcopy=False))}
        if schedule:
            extra["best_schedule"] = schedule  # [first epoch, lr] of each segment of the best member
    log = read_log(log_path)
    return {"wall_s": round(done.wall_s, 2), "cpu_s": round(done.cpu_s, 1), "best": best,
            "epochs_trained": len(log.report_ms), "trials": trials, "processes": len(log.workers), **extra}


# ---------------------------------------------------------------------------- output

MEDIANS = ("wall_s", "cpu_s", "best", "epochs_trained", "trials", "processes", "ray_start_s", "failed")
COLUMNS = (("wall s", "wall_s", "{:.1f}"), ("CPU-s", "cpu_s", "{:.1f}"), ("best (-val CE)", "best", "{:.4f}"),
           ("epochs", "epochs_trained", "{:g}"), ("trials", "trials", "{:g}"), ("processes", "processes", "{:g}"),
           ("Ray start s", "ray_start_s", "{:.1f}"), ("failed", "failed", "{:g}"))


def medians(runs: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for key in MEDIANS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def cell(r: dict, key: str, fmt: str) -> str:
    return "-" if r.get(key) is None else fmt.format(r[key])


def table(results: dict) -> str:
    lines = ["| system | " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for system, res in results["systems"].items():
        lines.append(f"| {system} (median) | " + " | ".join(cell(res["median"], k, f) for _, k, f in COLUMNS) + " |")
    lines += ["", "| system | seed | wall s | CPU-s | best | epochs | trials | best member's lr schedule |",
              "|---|---|---|---|---|---|---|---|"]
    for system, res in results["systems"].items():
        for r in res["runs"]:
            sched = " ".join(f"{e}:{lr:g}" for e, lr in r["best_schedule"]) if r.get("best_schedule") else "-"
            lines.append(f"| {system} | {r['seed']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                         f"{cell(r, 'best', '{:.4f}')} | {r['epochs_trained']} | {r['trials']} | {sched} |")
    return "\n".join(lines + [""] + targets(results["systems"]))


def targets(systems: dict) -> list[str]:
    """The issue's targets, on the medians over seeds (maximize)."""
    m = {s: r["median"] for s, r in systems.items()}
    out = ["Targets (medians over seeds):"]
    for ours in ("hpo-pbt", "hpo-pb2"):
        if ours in m and "hpo-tpe-asha" in m and None not in (m[ours]["best"], m["hpo-tpe-asha"]["best"]):
            ok = m[ours]["best"] >= m["hpo-tpe-asha"]["best"]
            out.append(f"- {ours} best {m[ours]['best']:.4f} >= hpo-tpe-asha {m['hpo-tpe-asha']['best']:.4f} "
                       f"(epochs {m[ours]['epochs_trained']:g} vs {m['hpo-tpe-asha']['epochs_trained']:g}): "
                       f"{'met' if ok else 'NOT met'}")
        if ours in m and "raytune-pbt" in m and None not in (m[ours]["best"], m["raytune-pbt"]["best"]):
            faster = m[ours]["wall_s"] < m["raytune-pbt"]["wall_s"]
            as_good = m[ours]["best"] >= m["raytune-pbt"]["best"]
            out.append(f"- {ours} wall {m[ours]['wall_s']:.1f} s vs raytune-pbt {m['raytune-pbt']['wall_s']:.1f} s "
                       f"(x{m['raytune-pbt']['wall_s'] / m[ours]['wall_s']:.2f}), best {m[ours]['best']:.4f} vs "
                       f"{m['raytune-pbt']['best']:.4f}: faster {'met' if faster else 'NOT met'}, equal or better "
                       f"{'met' if as_good else 'NOT met'}")
    return out


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="population 4, 4 epochs, seed 0")
    parser.add_argument("--systems", default=ALL_SYSTEMS)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "schedules")
    args = parser.parse_args()
    if args.smoke:
        args.population, args.epochs, args.seeds = 4, 4, args.seeds[:1]
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(ALL_SYSTEMS.split(","))
    if unknown:
        raise SystemExit(f"unknown system {sorted(unknown)[0]!r}; choose from {ALL_SYSTEMS}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    config = specs(args.population, args.epochs, args.interval, 0)
    n_trials = config["hpo-tpe-asha"]["n_trials"]
    print(f"budget: population {args.population} x {args.epochs} epochs = {args.population * args.epochs} epochs; "
          f"TPE + ASHA n_trials {n_trials} (expected to train "
          f"{sha_epochs(n_trials, args.epochs, SHA['min_resource'], SHA['reduction_factor']):.1f} epochs)", flush=True)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                    **{lib: version(lib) for lib in ("hpo", "optuna", "ray", "torch", "scikit-learn")}},
        "smoke": args.smoke, "config": {"population": args.population, "epochs": args.epochs,
                                        "interval": args.interval, "seeds": args.seeds, "specs": config},
        "systems": {s: {"runs": []} for s in systems},
    }
    timeout_s = 600 if args.smoke else 3600
    with tempfile.TemporaryDirectory(prefix="hpo-schedules-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "study").mkdir()
        for module in OBJECTIVE_MODULES:
            shutil.copy(HERE / module, tmp / "study" / module)
        # read the libraries once (untimed), so the first system does not pay the disk for the rest
        run_from_shell([[sys.executable, "-c", "import torch, sklearn, optuna, ray.tune, hpo.api"]],
                       env=dict(os.environ), cwd=tmp, timeout_s=300)
        for i, seed in enumerate(args.seeds):
            order = systems[i % len(systems):] + systems[: i % len(systems)]
            for system in order:
                spec = specs(args.population, args.epochs, args.interval, seed)[system]
                r = {"seed": seed, **run_one(system, spec, tmp, timeout_s)}
                results["systems"][system]["runs"].append(r)
                print(f"{system:<18} seed {seed}: wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s, best {r['best']}, "
                      f"epochs {r['epochs_trained']}, trials {r['trials']}", flush=True)
                (args.out / "results.json").write_text(json.dumps(results, indent=2))  # partial, as it goes
    for res in results["systems"].values():
        res["median"] = medians(res["runs"])
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
