"""hpo against distributed Optuna and Ray Tune (OptunaSearch + ASHA), side by side, in one go.

The same search space, sampler seed, pruner and budget run through:
  hpo-sqlite / hpo-postgres     hpo's driver and Ray workers (the Ray start-up is excluded, as
                                for Ray Tune: all share one Ray runtime started up front, and
                                each system starts with an idle Ray worker per CPU)
  optuna-sqlite / optuna-postgres  distributed Optuna as its docs show it: one process per core,
                                `study.optimize` on the same RDB storage, a global trial budget
                                (MaxTrialsCallback)
  raytune                       Ray Tune with OptunaSearch (TPE, same seed) and ASHAScheduler

Workloads: `overhead` (near-zero objective, 5 reports), `utilization` (1 s sleeping trials on 2
workers) and `quality` (torch MLP on digits with epochs as the fidelity; median of seeds).

    python benchmarks/compare.py [--smoke] [--only overhead,utilization,quality] [--seeds N] [--out DIR] [--reuse JSON]

Writes DIR/results.json and DIR/best_vs_time.html (+ .png when it can be rendered) and prints
a table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hpo.ray_runtime  # noqa: E402,F401  (Ray's auth mode before Ray loads)
import optuna  # noqa: E402
import ray  # noqa: E402

from hpo import api  # noqa: E402
from hpo.space import SearchSpace  # noqa: E402
from hpo.spec import parse_spec  # noqa: E402
from workers.reporter import Pruned, Reporter  # noqa: E402

import workloads  # noqa: E402

POSTGRES = os.environ.get("HPO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORKERS = 2


# ---------------------------------------------------------------------------- configuration


def workload_config(name: str, smoke: bool, seeds: int = 3) -> dict[str, Any]:
    if name == "overhead":
        return dict(fn="noop", space=workloads.NOOP_SPACE, args={}, n_trials=20 if smoke else 500,
                    direction="minimize", pruner=True, seeds=[0])
    if name == "utilization":
        return dict(fn="sleeper", space=workloads.NOOP_SPACE, args={"seconds": 0.2 if smoke else 1.0},
                    n_trials=6 if smoke else 60, direction="minimize", pruner=False, seeds=[0])
    if name == "quality":
        return dict(fn="train", space=workloads.TRAIN_SPACE, args={"epochs": 2 if smoke else 8},
                    n_trials=4 if smoke else 40, direction="maximize", pruner=True,
                    seeds=[0] if smoke else list(range(seeds)))
    raise SystemExit(f"unknown workload {name!r}")


def tpe(seed: int) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)


def sha() -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


# ---------------------------------------------------------------------------- hpo


def run_hpo(cfg: dict, seed: int, url: str) -> dict:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    spec = parse_spec(
        {
            "name": name, "objective": f"workloads:{cfg['fn']}", "objective_args": cfg["args"],
            "search_space": cfg["space"], "direction": cfg["direction"],
            "sampler": {"name": "tpe", "options": {"n_startup_trials": 10}}, "seed": seed,
            "pruner": {"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 3}}
            if cfg["pruner"] else "none",
            "n_trials": cfg["n_trials"], "max_concurrent_trials": WORKERS, "max_retries": 0,
        },
        base_dir=HERE,
    )
    started = time.time()
    api.run(spec, storage=url)
    wall = time.time() - started
    study = optuna.load_study(study_name=name, storage=url)
    return _from_trials(study.trials, started, wall, cfg)


# ---------------------------------------------------------------------------- Optuna


def _optuna_worker(url: str, name: str, cfg: dict, seed: int, rank: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url, sampler=tpe(seed + rank),
                              pruner=sha() if cfg["pruner"] else optuna.pruners.NopPruner())
    space = SearchSpace.model_validate(cfg["space"])
    fn = getattr(workloads, cfg["fn"])

    def objective(trial: optuna.Trial) -> float:
        params = space.sample(trial)

        def send(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        try:
            return fn(params, Reporter(seed=seed + trial.number, send=send), **cfg["args"])
        except Pruned:
            raise optuna.TrialPruned() from None

    budget = optuna.study.MaxTrialsCallback(cfg["n_trials"], states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    study.optimize(objective, n_trials=cfg["n_trials"], callbacks=[budget])


def run_optuna(cfg: dict, seed: int, url: str) -> dict:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=url, direction=cfg["direction"])
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_optuna_worker, args=(url, name, cfg, seed, rank)) for rank in range(WORKERS)]
    started = time.time()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    wall = time.time() - started
    study = optuna.load_study(study_name=name, storage=url)
    return _from_trials(study.trials, started, wall, cfg)


# ---------------------------------------------------------------------------- Ray Tune


class DefineByRun:
    """Ray Tune pickles its searcher: a module-level callable samples the same space."""

    def __init__(self, space: dict) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        SearchSpace.model_validate(self.space).sample(trial)


def run_raytune(cfg: dict, seed: int, tmp: Path) -> dict:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    fn = getattr(workloads, cfg["fn"])
    args = cfg["args"]

    def trainable(config: dict) -> None:
        def send(step: int, value: float) -> bool:
            # ASHA's time_attr is the step as hpo and Optuna see it (0-based), so its rungs
            # (steps 1 and 3 with grace_period 1 and rf 3) are Optuna's successive halving rungs.
            tune.report({"value": value, "step": step, "epochs": step + 1, "t": time.time()})
            return False  # ASHA stops the function at a report when it prunes the trial

        fn(dict(config), Reporter(seed=seed, send=send), **args)

    mode = "max" if cfg["direction"] == "maximize" else "min"
    max_t = args.get("epochs", args.get("steps", 5))
    scheduler = (ASHAScheduler(time_attr="step", max_t=max_t, grace_period=1, reduction_factor=3)
                 if cfg["pruner"] else FIFOScheduler())
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric="value", mode=mode, num_samples=cfg["n_trials"], max_concurrent_trials=WORKERS,
            search_alg=OptunaSearch(space=DefineByRun(cfg["space"]), metric="value", mode=mode, sampler=tpe(seed)),
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp / "raytune"), name=f"bench-{uuid.uuid4().hex[:8]}", verbose=0),
    )
    started = time.time()
    grid = tuner.fit()
    wall = time.time() - started
    finals, steps, pruned, curve = [], 0, 0, []
    for result in grid:
        if result.error or not result.metrics:
            continue
        history = result.metrics_dataframe
        n = int(history["epochs"].max()) if history is not None and len(history) else 0
        steps += n
        final_step = max_t if cfg["fn"] != "sleeper" else args.get("steps", 5)
        if n < final_step and cfg["pruner"]:
            pruned += 1
        else:
            finals.append(result.metrics["value"])
            curve.append((result.metrics["t"] - started, result.metrics["value"]))
    return _summary(finals, steps, pruned, len(grid), wall, curve, cfg)


# ---------------------------------------------------------------------------- results


def _from_trials(trials, started: float, wall: float, cfg: dict) -> dict:
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    steps = sum(len(t.intermediate_values) for t in finished)
    curve = [(t.datetime_complete.timestamp() - started, t.value) for t in complete]
    return _summary([t.value for t in complete], steps, len(finished) - len(complete), len(finished), wall, curve, cfg)


def _summary(finals, steps, pruned, n, wall, curve, cfg) -> dict:
    maximize = cfg["direction"] == "maximize"
    best = (max if maximize else min)(finals) if finals else None
    curve.sort()
    best_curve, running = [], None
    for t, v in curve:
        running = v if running is None else (max(running, v) if maximize else min(running, v))
        best_curve.append((round(t, 3), running))
    return {
        "wall_s": round(wall, 3), "trials": n, "ms_per_trial": round(1000 * wall / max(n, 1), 2),
        "best": best, "steps_trained": steps, "pruned_fraction": round(pruned / max(n, 1), 3),
        "best_curve": best_curve,
    }


def postgres_ok() -> bool:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def fresh_postgres() -> str:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"hpo_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)


def drop_postgres(url: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    engine = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


@ray.remote(num_cpus=1)
def _hold_a_worker() -> None:
    time.sleep(0.5)  # long enough that each of these tasks runs in a worker of its own


def same_ray_state() -> None:
    """Every system starts on the Ray runtime as `ray.init` leaves it: an idle worker per CPU.

    Without this the order of the systems leaks into their figures: Ray Tune's trial actors take
    Ray's idle workers with them when they exit, so whichever system runs next waits for new
    worker processes (about 0.7 s on the 2-core machine) that the others found ready.
    """
    ray.get([_hold_a_worker.remote() for _ in range(WORKERS)])


def run_system(system: str, cfg: dict, seed: int, tmp: Path) -> dict:
    same_ray_state()
    if system == "raytune":
        return run_raytune(cfg, seed, tmp)
    if system.endswith("postgres"):
        url = fresh_postgres()
        try:
            return (run_hpo if system.startswith("hpo") else run_optuna)(cfg, seed, url)
        finally:
            drop_postgres(url)
    url = f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
    return (run_hpo if system.startswith("hpo") else run_optuna)(cfg, seed, url)


def median_of(runs: list[dict]) -> dict:
    """The run with the median wall time, plus the medians of the headline numbers."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    out = dict(ordered[len(ordered) // 2])
    for key in ("wall_s", "ms_per_trial", "steps_trained", "pruned_fraction"):
        out[key] = statistics.median(r[key] for r in runs)
    bests = [r["best"] for r in runs if r["best"] is not None]
    out["best"] = statistics.median(bests) if bests else None
    out["bests"] = sorted(bests)  # one per seed: the spread the median hides
    out["walls"] = sorted(r["wall_s"] for r in runs)
    out["runs"] = len(runs)
    return out


def plot(results: dict, out: Path) -> list[str]:
    import plotly.graph_objects as go

    written = []
    quality = results["workloads"].get("quality")
    if not quality:
        return written
    fig = go.Figure()
    for system, res in quality.items():
        xs, ys = zip(*res["best_curve"]) if res["best_curve"] else ((), ())
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv", name=system))
    fig.update_layout(title="Time to quality: best validation accuracy against wall time (median seed)",
                      xaxis_title="seconds", yaxis_title="best validation accuracy", template="plotly_white")
    fig.write_html(out / "best_vs_time.html", include_plotlyjs=True)
    written.append("best_vs_time.html")
    try:
        fig.write_image(out / "best_vs_time.png", width=900, height=500)
        written.append("best_vs_time.png")
    except Exception as exc:  # PNG needs kaleido and a Chrome; the HTML always works
        print(f"(no PNG: {type(exc).__name__}: {exc})")
    return written


def table(results: dict) -> str:
    lines = []
    for workload, systems in results["workloads"].items():
        lines.append(f"\n{workload}")
        lines.append(f"  {'system':<16} {'wall s':>8} {'ms/trial':>9} {'best':>9} {'steps':>7} {'pruned':>7}")
        for system, r in systems.items():
            best = "-" if r["best"] is None else f"{r['best']:.4f}"
            lines.append(f"  {system:<16} {r['wall_s']:>8.2f} {r['ms_per_trial']:>9.1f} {best:>9} "
                         f"{r['steps_trained']:>7} {r['pruned_fraction']:>7.2f}")
        if workload == "utilization":
            cfg = results["config"][workload]
            ideal = cfg["n_trials"] * cfg["args"]["seconds"] / WORKERS
            for system, r in systems.items():
                lines.append(f"  {system:<16} utilization {ideal / r['wall_s']:.1%} of ideal ({ideal:.1f} s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="hpo vs distributed Optuna vs Ray Tune")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets (CI)")
    parser.add_argument("--only", default="overhead,utilization,quality")
    parser.add_argument("--systems", default="hpo-sqlite,hpo-postgres,optuna-sqlite,optuna-postgres,raytune")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the quality workload (median of them)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--reuse", type=Path, help="an earlier results.json: keep its workloads that --only skips "
                        "(marked as reused in the output)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    systems = [s for s in args.systems.split(",") if s]
    if not postgres_ok():
        print(f"PostgreSQL not reachable at {POSTGRES}: skipping the postgres systems")
        systems = [s for s in systems if not s.endswith("postgres")]
    args.out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "optuna": optuna.__version__,
                    "ray": ray.__version__},
        "smoke": args.smoke, "config": {}, "workloads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.only.split(","):
            cfg = workload_config(workload, args.smoke, args.seeds)
            results["config"][workload] = {k: v for k, v in cfg.items() if k != "space"}
            results["workloads"][workload] = {}
            for system in systems:
                runs = [run_system(system, cfg, seed, Path(tmp)) for seed in cfg["seeds"]]
                results["workloads"][workload][system] = median_of(runs)
                r = results["workloads"][workload][system]
                print(f"{workload:<12} {system:<16} wall {r['wall_s']:.2f} s, best {r['best']}", flush=True)
    if args.reuse:
        earlier = json.loads(args.reuse.read_text())
        for workload, systems_results in earlier["workloads"].items():
            if workload not in results["workloads"]:
                results["workloads"][workload] = systems_results
                results["config"][workload] = earlier["config"][workload]
                results.setdefault("reused", []).append(workload)
    results["files"] = plot(results, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    ray.shutdown()


if __name__ == "__main__":
    main()
