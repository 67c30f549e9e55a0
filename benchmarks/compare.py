"""hpo against distributed Optuna and Ray Tune, each run as its users run it: a fresh, cold process
from the shell per run, on the same study spec, measured the same way.

  hpo-sqlite / hpo-postgres        `hpo run SPEC --storage URL --json` (as users run it: on one
                                   machine with no GPU asked, trials run in local worker processes)
  hpo-ray-sqlite                   the same with `--backend ray` (it starts its own Ray runtime)
  optuna-sqlite / optuna-postgres  distributed Optuna as its docs show it: one
                                   `python peers/optuna_peer.py` per slot, started together once
                                   `optuna create-study` made the study (timed), `study.optimize` on the
                                   same RDB storage with a global MaxTrialsCallback budget
  raytune                          `python peers/raytune_peer.py`: its own `ray.init`, a Tuner with
                                   OptunaSearch (TPE, same seed) and ASHAScheduler

Every system runs the same spec file, written next to copies of the objective modules (hpo
imports the objective from the spec's folder; the peers do the same), with each trial's threads
pinned as hpo pins them (int(cpu), at least 1). Per run: wall time of the commands (start to
exit), the machine's CPU-seconds meanwhile (/proc/stat: every process, Ray's daemons too), Ray's
start-up (hpo: its --json timings when given; Ray Tune: its ray.init), start-up (start to the
first trial's start) and shut-down (last trial's end to exit) from the trials' timestamps,
processes that ran trials, best value, epochs (steps) trained, pruned fraction and the median
time of a `reporter.report` call inside the objective (benchlog.py). Two columns split the wall
into what the search chose and what the system costs: `train s` sums each trial's time inside
the objective (its start to its last report's return: the configurations TPE picked decide it),
`gap ms` is the median time a process sits between one trial's last report and its next trial's
start (storing, sampling, handing over; none where each trial gets a fresh process). Systems are
interleaved per seed (seed 0: every system, seed 1: every system, ...), the order rotating by
seed, and each system starts only once the machine is quiet (all CPUs together busy under 15 %
of one for half a second, at most 30 s of waiting: `quiet_wait_s`), so that nothing an earlier
system left behind (a Ray runtime still shutting down) runs into the next one's time. The
CPU-seconds are the whole machine's: run it on a quiet machine.

Read the figures with these in mind: distributed Optuna's budget is per process
(MaxTrialsCallback stops a process after its trial ends), so it may run up to one trial per extra
process beyond n_trials (the `trials` column); its study is created from the shell first, as
Optuna's distributed recipe does (`optuna create-study`, in its wall and CPU; the `create s`
column says how long it took, so its wall without it is there too); start-up counts to the first trial's start as each system records it
(hpo and Optuna: the trial's creation; Ray Tune: its function's start), and results.json also
has `first_call_s` and `after_last_report_s`, the same two seen from inside the objective.
Before a workload's seeds, its objective module is imported alone three times, each in a fresh
process from the shell with threads pinned the same way (`objective_import_s` in its config):
every system pays that before its first trial, so `own s` (`own_startup_s`) is the first call
less its median: the start-up that is the system's own (hpo's workers import the objective while
its driver starts, so the two overlap; Optuna's peers import it, then load the study; two
processes importing at once on two cores is slower than one alone, and that counts as each
system's own). Ray Tune's best value is its trial's last report; a trial ASHA stops at its last
step counts as complete (only in --smoke, whose 2 epochs end at ASHA's first rung).

Workloads: `overhead` (near-zero objective, 5 reports), `utilization` (1 s sleeping trials on
2 slots), `quality` (torch MLP on digits, epochs as the fidelity), `heavy` (heavy.py: torch and
scikit-learn imported and a 12k x 40 dataset built at the module's import; an MLP, 8 epochs) and
`latency` (8 trials in flight on 0.25 CPU each, 10 reports 50 ms apart, median pruner: every
report waits for a decision; hpo and Optuna only, Optuna with 8 processes).

Successive halving is Optuna's rule by default (hpo and Optuna run the same pruner; Ray Tune runs
its ASHAScheduler on the same rungs, a rule that keeps more trials). `--pruner asha` gives hpo
Ray Tune's rule instead (hpo's `asha` pruner), so that hpo and Ray Tune prune alike; the Optuna
systems sit that out.

    python benchmarks/compare.py [--smoke] [--only overhead,utilization,quality,heavy,latency]
        [--systems hpo-sqlite,...] [--seeds N] [--out DIR] [--reuse JSON] [--pruner asha]

Writes DIR/results.json (per workload and system: the medians over seeds, and each seed's
figures) and DIR/best_vs_time[_heavy].html (+ .png when it can be rendered); prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

import workloads  # noqa: E402
from measure import BenchLog, CommandFailed, Finished, read_log, run_from_shell, wait_until_quiet  # noqa: E402

POSTGRES = os.environ.get("HPO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
HPO = str(Path(sys.executable).with_name("hpo")) if Path(sys.executable).with_name("hpo").exists() else "hpo"
OPTUNA = str(Path(sys.executable).with_name("optuna")) if Path(sys.executable).with_name("optuna").exists() else "optuna"
PEERS = HERE / "peers"
OBJECTIVE_MODULES = ("benchlog.py", "workloads.py", "heavy.py")
ALL_WORKLOADS = "overhead,utilization,quality,heavy,latency"
ALL_SYSTEMS = "hpo-sqlite,hpo-ray-sqlite,hpo-postgres,optuna-sqlite,optuna-postgres,raytune"
SHA = {"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 3}}
# --smoke without --only/--systems: every system once or twice, on the workloads that differ in
# how the systems run them, in well under 2 minutes on 2 cores (each run is a cold start of
# 4 to 20 s); --smoke --only utilization,quality runs those on hpo-sqlite.
SMOKE_WORKLOADS = "overhead,heavy,latency"
SMOKE_SYSTEMS = {
    "heavy": ("hpo-sqlite", "hpo-ray-sqlite", "optuna-sqlite", "raytune"),
    "overhead": ("hpo-postgres", "optuna-postgres"),
    "latency": ("hpo-sqlite", "optuna-sqlite"),
    "utilization": ("hpo-sqlite",),
    "quality": ("hpo-sqlite",),
}
# Environment a user's shell would not hand these commands: this harness's own settings, or a
# Ray cluster to join (every system starts its own, cold).
SCRUBBED = ("RAY_ADDRESS", "HPO_RAY_ADDRESS", "HPO_BACKEND", "HPO_STORAGE", "HPO_BENCH_LOG", "HPO_ARTIFACTS",
            "OMP_NUM_THREADS")


# ---------------------------------------------------------------------------- configuration


def workload_config(name: str, smoke: bool, seeds: int) -> dict[str, Any]:
    """The workload's spec (less name and seed), its seeds, and the systems it leaves out."""
    one = [0]
    many = one if smoke else list(range(seeds))
    if name == "overhead":
        spec = dict(objective="workloads:noop", objective_args={"steps": 5}, search_space=workloads.NOOP_SPACE,
                    direction="minimize", pruner=SHA, n_trials=20 if smoke else 500)
    elif name == "utilization":
        spec = dict(objective="workloads:sleeper", objective_args={"seconds": 0.2 if smoke else 1.0, "steps": 5},
                    search_space=workloads.NOOP_SPACE, direction="minimize", pruner={"name": "none"},
                    n_trials=6 if smoke else 60)
    elif name == "quality":
        spec = dict(objective="workloads:train", objective_args={"epochs": 2 if smoke else 8},
                    search_space=workloads.TRAIN_SPACE, direction="maximize", pruner=SHA, n_trials=4 if smoke else 40)
    elif name == "heavy":
        spec = dict(objective="heavy:objective", objective_args={"epochs": 2 if smoke else 8},
                    search_space=workloads.HEAVY_SPACE, direction="maximize", pruner=SHA, n_trials=4 if smoke else 40)
    elif name == "latency":
        spec = dict(objective="workloads:ticker", objective_args={"steps": 3 if smoke else 10, "seconds": 0.05},
                    search_space=workloads.NOOP_SPACE, direction="minimize", pruner={"name": "median"},
                    n_trials=8 if smoke else 40, max_concurrent_trials=8, resources={"cpu": 0.25})
        return dict(spec=_spec_defaults(spec), seeds=one, skip={"raytune": "hpo and Optuna only"})
    else:
        raise SystemExit(f"unknown workload {name!r}; choose from {ALL_WORKLOADS}")
    return dict(spec=_spec_defaults(spec), seeds=many if name in ("quality", "heavy") else one, skip={})


def with_pruner(cfg: dict[str, Any], pruner: str) -> dict[str, Any]:
    """The workload with ``asha`` (Ray Tune's stopping rule, same options) in place of Optuna's
    successive halving; Optuna has no such pruner, so its systems sit that out."""
    if pruner == "successive_halving" or cfg["spec"]["pruner"]["name"] != "successive_halving":
        return cfg
    cfg["spec"]["pruner"] = {**cfg["spec"]["pruner"], "name": pruner}
    for system in ALL_SYSTEMS.split(","):
        if system.startswith("optuna"):
            cfg["skip"].setdefault(system, "Optuna has no pruner with Ray Tune's ASHA rule")
    return cfg


def _spec_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    return {"sampler": {"name": "tpe", "options": {"n_startup_trials": 10}}, "max_concurrent_trials": 2,
            "resources": {"cpu": 1}, "max_retries": 0, **spec}


def write_spec(folder: Path, workload: str, cfg: dict, seed: int) -> Path:
    name = f"bench-{workload}-s{seed}"
    path = folder / f"{name}.yaml"
    spec = {"name": name, **cfg["spec"], "seed": seed}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # the space's order matters (when:)
    return path


# ---------------------------------------------------------------------------- the systems


def run_hpo(spec_path: Path, spec: dict, url: str, env: dict, cwd: Path, timeout_s: float, backend: str = "auto"):
    done = run_from_shell([[HPO, "run", str(spec_path), "--storage", url, "--json", "--backend", backend]], env=env,
                          cwd=cwd, timeout_s=timeout_s)
    timings = _json_object(done.stdouts[0]).get("timings") or {}  # e.g. ray_start_s, when hpo gives them
    return done, trials_from_store(url, spec["name"]), timings


def run_optuna(spec_path: Path, spec: dict, url: str, env: dict, cwd: Path, timeout_s: float):
    # Optuna's distributed recipe: create the study from the shell, then start one process per slot.
    create = [OPTUNA, "create-study", "--storage", url, "--study-name", spec["name"], "--direction", spec["direction"]]
    commands = [[sys.executable, str(PEERS / "optuna_peer.py"), "--spec", str(spec_path), "--storage", url,
                 "--study", spec["name"], "--rank", str(rank)] for rank in range(spec["max_concurrent_trials"])]
    done = run_from_shell(commands, env=env, cwd=cwd, timeout_s=timeout_s, first=create)
    return done, trials_from_store(url, spec["name"]), {}


def run_raytune(spec_path: Path, spec: dict, env: dict, cwd: Path, timeout_s: float):
    command = [sys.executable, str(PEERS / "raytune_peer.py"), "--spec", str(spec_path),
               "--storage-path", str(cwd / "raytune")]
    done = run_from_shell([command], env=env, cwd=cwd, timeout_s=timeout_s)
    lines = [line for line in done.stdouts[0].splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise CommandFailed(f"raytune peer printed no RESULT line:\n{done.stdouts[0][-2000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    return done, result["trials"], {"ray_start_s": result["ray_start_s"]}


def _json_object(text: str) -> dict:
    """The JSON summary `hpo run --json` printed (whatever else went to stdout around it)."""
    decoder = json.JSONDecoder()
    for i, char in enumerate(text):
        if char == "{" and (i == 0 or text[i - 1] == "\n"):
            try:
                return decoder.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                continue
    raise CommandFailed(f"hpo run --json printed no JSON object:\n{text[-2000:]}")


def trials_from_store(url: str, name: str) -> list[dict]:
    """Each trial's state, steps, value and start/end (epoch seconds; Optuna keeps naive local time)."""
    states = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned"}
    trials = []
    for t in optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False):
        state = states.get(t.state, "fail")
        trials.append({"state": state} if state == "fail" else {
            "state": state, "steps": len(t.intermediate_values), "value": t.value,
            "start": t.datetime_start.timestamp(), "end": t.datetime_complete.timestamp(),
        })
    return trials


def run_system(system: str, workload: str, cfg: dict, seed: int, tmp: Path, timeout_s: float) -> dict:
    spec_path = write_spec(tmp / "study", workload, cfg, seed)
    spec = yaml.safe_load(spec_path.read_text())
    log_path = tmp / f"bench-{uuid.uuid4().hex[:8]}.log"
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | {"HPO_BENCH_LOG": str(log_path)}
    quiet_s = wait_until_quiet()  # what the system before left running (a Ray shutting down) has ended
    if system == "raytune":
        done, trials, timings = run_raytune(spec_path, spec, env, tmp, timeout_s)
    else:
        url = fresh_postgres() if system.endswith("postgres") else f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
        try:
            if system.startswith("hpo"):
                backend = "ray" if system.startswith("hpo-ray") else "auto"
                # kept checkpoints beside the run's files (on a server database they would go to
                # this machine's state folder, ~/.local/state/hpo, and outlive the benchmark)
                env["HPO_ARTIFACTS"] = str(tmp / "artifacts")
                done, trials, timings = run_hpo(spec_path, spec, url, env, tmp, timeout_s, backend)
            else:
                done, trials, timings = run_optuna(spec_path, spec, url, env, tmp, timeout_s)
        finally:
            if system.endswith("postgres"):
                drop_postgres(url)
    return figures(done, trials, read_log(log_path), timings, spec) | {"quiet_wait_s": round(quiet_s, 2)}


# ---------------------------------------------------------------------------- figures


def figures(done: Finished, trials: list[dict], log: BenchLog, timings: dict, spec: dict) -> dict:
    finished = [t for t in trials if t["state"] != "fail"]
    complete = [t for t in finished if t["state"] == "complete"]
    maximize = spec["direction"] == "maximize"
    ended = done.started + done.wall_s
    curve, running = [], None
    for t in sorted(complete, key=lambda t: t["end"]):
        running = t["value"] if running is None else (max if maximize else min)(running, t["value"])
        curve.append((round(t["end"] - done.started, 3), running))
    n = max(len(finished), 1)
    return {
        "wall_s": round(done.wall_s, 3), "cpu_s": round(done.cpu_s, 2),
        "ray_start_s": timings.get("ray_start_s"),
        "setup_s": round(done.setup_s, 3) if done.setup_s else None,  # `optuna create-study`, within wall_s
        "startup_s": round(min(t["start"] for t in finished) - done.started, 3) if finished else None,
        "shutdown_s": round(ended - max(t["end"] for t in finished), 3) if finished else None,
        "workers": len(log.workers), "objective_loads": len(log.loaded),
        "best": running, "steps_trained": sum(t["steps"] for t in finished),
        "pruned_fraction": round(sum(t["state"] == "pruned" for t in finished) / n, 3),
        "trials": len(finished), "failed": len(trials) - len(finished),
        "ms_per_trial": round(1000 * done.wall_s / n, 2),
        "report_ms": round(statistics.median(log.report_ms), 3) if log.report_ms else None,
        "report_ms_p90": round(statistics.quantiles(log.report_ms, n=10)[-1], 3) if len(log.report_ms) > 1 else None,
        "reports": len(log.report_ms),
        # what the search chose to train (objective time summed over trials) and what the system
        # adds between two trials of one process (store the result, sample, hand the next over)
        "objective_s": round(log.objective_s, 2),
        "between_trials_ms": round(statistics.median(log.between_ms), 1) if log.between_ms else None,
        # the same two, seen from inside the objective (its first call, its last report's return)
        "first_call_s": None if log.first_call is None else round(log.first_call - done.started, 3),
        "after_last_report_s": None if log.last_report is None else round(ended - log.last_report, 3),
        "trials_span_s": round(max(t["end"] for t in finished) - min(t["start"] for t in finished), 3)
        if finished else None,
        "timings": timings,  # as the system reported them
        "best_curve": curve,
        **work_steps(log),
    }


def work_steps(log: BenchLog) -> dict:
    """Each step trained with its time and work (benchmarks/work.py fits time to work across the
    systems of a run): {"work_steps": {"features": [...], "rows": [[s, cold, *features], ...]}}."""
    if not log.steps:
        return {}
    names = sorted({name for _, _, work in log.steps for name in work})
    rows = [[round(s, 4), int(cold), *(work.get(name, 0.0) for name in names)] for s, cold, work in log.steps]
    return {"work_steps": {"features": names, "rows": rows}}


MEDIANS = ("wall_s", "cpu_s", "ray_start_s", "setup_s", "startup_s", "shutdown_s", "workers", "objective_loads", "best",
           "steps_trained", "pruned_fraction", "trials", "failed", "ms_per_trial", "report_ms", "report_ms_p90",
           "reports", "first_call_s", "after_last_report_s", "trials_span_s", "objective_s", "between_trials_ms",
           "own_startup_s")


def median_of(runs: list[dict]) -> dict:
    """Medians over the seeds, the best-vs-time curve of the median-wall seed, and every seed's run."""
    out: dict[str, Any] = {}
    for key in MEDIANS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["best_curve"] = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]["best_curve"]
    out["seeds"] = runs
    return out


# ---------------------------------------------------------------------------- PostgreSQL


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


# ---------------------------------------------------------------------------- output


def plot(results: dict, out: Path) -> list[str]:
    import plotly.graph_objects as go

    written = []
    for workload, stem in (("quality", "best_vs_time"), ("heavy", "best_vs_time_heavy")):
        systems = results["workloads"].get(workload)
        if not systems:
            continue
        fig = go.Figure()
        for system, res in systems.items():
            xs, ys = zip(*res["best_curve"]) if res["best_curve"] else ((), ())
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv", name=system))
        fig.update_layout(title=f"{workload}: best validation accuracy against wall time from the shell (median seed)",
                          xaxis_title="seconds since the command started", yaxis_title="best validation accuracy",
                          template="plotly_white")
        fig.write_html(out / f"{stem}.html", include_plotlyjs=True)
        written.append(f"{stem}.html")
        try:
            fig.write_image(out / f"{stem}.png", width=900, height=500)
            written.append(f"{stem}.png")
        except Exception as exc:  # PNG needs kaleido and a Chrome; the HTML always works
            print(f"(no PNG: {type(exc).__name__}: {exc})")
    return written


# (title, key, format): "CPU-s" is the machine's, "workers" the processes that ran trials, "epochs"
# the steps trained over all trials, "report ms" the median time of a report call in the objective.
COLUMNS = (("trials", "trials", "{:g}"), ("wall s", "wall_s", "{:.2f}"), ("CPU-s", "cpu_s", "{:.1f}"),
           ("Ray s", "ray_start_s", "{:.2f}"), ("create s", "setup_s", "{:.2f}"), ("start s", "startup_s", "{:.2f}"),
           ("stop s", "shutdown_s", "{:.2f}"), ("own s", "own_startup_s", "{:.2f}"),
           ("workers", "workers", "{:g}"), ("best", "best", "{:.4f}"), ("epochs", "steps_trained", "{:g}"),
           ("pruned", "pruned_fraction", "{:.2f}"), ("train s", "objective_s", "{:.1f}"),
           ("gap ms", "between_trials_ms", "{:.1f}"), ("report ms", "report_ms", "{:.2f}"))


def table(results: dict) -> str:
    lines = []
    for workload, systems in results["workloads"].items():
        reused = " (reused)" if workload in results.get("reused", []) else ""
        lines.append(f"\n{workload}{reused}")
        lines.append(f"  {'system':<16}" + "".join(f"{title:>10}" for title, _, _ in COLUMNS))
        for system, r in systems.items():
            cells = ["-" if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in COLUMNS]
            lines.append(f"  {system:<16}" + "".join(f"{cell:>10}" for cell in cells))
        cfg = results["config"][workload].get("spec")
        if cfg is None:  # reused from a results.json of the earlier, in-process harness
            continue
        if workload == "overhead":
            for system, r in systems.items():
                lines.append(f"  {system:<16} {r['ms_per_trial']:.1f} ms per trial, wall over {r['trials']:g} trials")
        if workload == "utilization":
            ideal = cfg["n_trials"] * cfg["objective_args"]["seconds"] / cfg["max_concurrent_trials"]
            for system, r in systems.items():
                if r.get("trials_span_s"):
                    lines.append(f"  {system:<16} utilization {ideal / r['wall_s']:.1%} of ideal ({ideal:.1f} s) over "
                                 f"the wall, {ideal / r['trials_span_s']:.1%} from first trial start to last trial end")
        if workload == "heavy":
            lines += targets(systems, cfg)
        if workload == "latency":
            for system, r in systems.items():
                if r["report_ms"] is not None:
                    mark = f" (target < 10 ms: {_met(r['report_ms'] < 10)})" if system.startswith("hpo") else ""
                    lines.append(f"  {system:<16} median report-to-decision {r['report_ms']:.2f} ms (90th percentile "
                                 f"{r['report_ms_p90']:.2f}) with {cfg['max_concurrent_trials']} trials in flight{mark}")
    return "\n".join(lines)


def targets(systems: dict, spec: dict) -> list[str]:
    """The issue's targets on the heavy workload: hpo's ratios against the others."""
    lines = ["  hpo against the others (medians of seeds; target in brackets):"]

    def ratio(key: str, a: str, b: str, limit: float) -> None:
        if a in systems and b in systems and systems[b][key]:
            value = systems[a][key] / systems[b][key]
            lines.append(f"    {key:<7} {a} / {b}: {value:.2f} (<= {limit}: {_met(value <= limit)})")

    def better(a: str, b: str) -> None:
        if a in systems and b in systems and systems[a]["best"] is not None and systems[b]["best"] is not None:
            ours, theirs = systems[a]["best"], systems[b]["best"]
            ok = ours >= theirs if spec["direction"] == "maximize" else ours <= theirs
            lines.append(f"    best    {a} {ours:.4f}, {b} {theirs:.4f} (equal or better: {_met(ok)})")

    def without_create(a: str, b: str) -> None:
        if a in systems and b in systems and systems[b].get("setup_s"):
            value = systems[a]["wall_s"] / (systems[b]["wall_s"] - systems[b]["setup_s"])
            lines.append(f"            {a} / {b} less its `optuna create-study` (median wall - median create): "
                         f"{value:.2f} (how runs before 2026-12-06 07:30 UTC measured it)")

    for hpo, peer in (("hpo-sqlite", "optuna-sqlite"), ("hpo-ray-sqlite", "optuna-sqlite"),
                      ("hpo-postgres", "optuna-postgres")):
        ratio("wall_s", hpo, peer, 0.9)
        without_create(hpo, peer)
        ratio("cpu_s", hpo, peer, 1.1)
        better(hpo, peer)
        ratio("wall_s", hpo, "raytune", 0.2)
        better(hpo, "raytune")
    slots = spec["max_concurrent_trials"]
    for system, r in systems.items():
        if system.startswith("hpo") and r["startup_s"] is not None:
            whole = r["startup_s"] + r["shutdown_s"]
            lines.append(f"    {system}: start-up {r['startup_s']:.2f} s + shut-down {r['shutdown_s']:.2f} s = "
                         f"{whole:.2f} s; processes that ran trials {r['workers']:g} "
                         f"(<= slots + 1 = {slots + 1}: {_met(r['workers'] <= slots + 1)})")
    for system, r in systems.items():  # the "of its own": less what importing the objective takes
        if r.get("own_startup_s") is not None and r["after_last_report_s"] is not None:
            own = r["own_startup_s"] + r["after_last_report_s"]
            mark = f" (<= 5 s: {_met(own <= 5)})" if system.startswith("hpo") else ""
            lines.append(f"    {system}: its own start-up {r['own_startup_s']:.2f} s (first call {r['first_call_s']:.2f} s "
                         f"less the objective's import alone) + shut-down {r['after_last_report_s']:.2f} s = "
                         f"{own:.2f} s{mark}")
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# ---------------------------------------------------------------------------- main


def dump(results: dict) -> str:
    """Indented JSON with each list of plain values on one line (a study's steps are thousands)."""
    text = json.dumps(results, indent=2)
    flat = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    return flat if json.loads(flat) == results else text


def objective_import_s(folder: Path, objective: str, threads: int, repeats: int = 3) -> list[float]:
    """How long the objective's module takes to import alone, in a fresh process from the shell
    with threads pinned as the systems pin them, ``repeats`` times: what every system pays before
    its first trial whatever it does (heavy.py: torch, scikit-learn and the dataset), so that
    start-up can be split into that and the system's own part (the issue's "of its own")."""
    module = objective.partition(":")[0]
    code = ("import sys, time; sys.path.insert(0, '.'); t = time.perf_counter(); "
            f"import {module}; print(time.perf_counter() - t)")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and k != "HPO_BENCH_LOG"}
    env["OMP_NUM_THREADS"] = str(threads)
    runs = [run_from_shell([[sys.executable, "-c", code]], env=env, cwd=folder, timeout_s=300) for _ in range(repeats)]
    return [round(float(done.stdouts[0].strip()), 3) for done in runs]


def warm_page_cache(tmp: Path) -> None:
    """Read the libraries once (untimed), so the first system does not pay the disk for the rest."""
    run_from_shell([[sys.executable, "-c", "import torch, sklearn, optuna, ray.tune, hpo.api"]],
                   env=dict(os.environ), cwd=tmp, timeout_s=300)


def main() -> None:
    parser = argparse.ArgumentParser(description="hpo vs distributed Optuna vs Ray Tune, each cold from the shell")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets (CI); without --systems, each workload "
                        "runs on its SMOKE_SYSTEMS only")
    parser.add_argument("--only", help=f"default: {ALL_WORKLOADS} ({SMOKE_WORKLOADS} with --smoke)")
    parser.add_argument("--systems", help=f"default: {ALL_SYSTEMS}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the quality and heavy workloads (median of them)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--reuse", type=Path, help="an earlier results.json: keep its workloads that --only skips "
                        "(marked as reused in the output)")
    parser.add_argument("--pruner", choices=("successive_halving", "asha"), default="successive_halving",
                        help="the rule of the workloads that prune by successive halving: Optuna's "
                        "(every system) or asha, Ray Tune's ASHAScheduler rule (hpo and Ray Tune only)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    only = args.only or (SMOKE_WORKLOADS if args.smoke else ALL_WORKLOADS)
    configs = {w: with_pruner(workload_config(w, args.smoke, args.seeds), args.pruner) for w in only.split(",") if w}
    chosen = {w: (args.systems or ALL_SYSTEMS).split(",") for w in configs}
    if args.smoke and args.systems is None:
        chosen = {w: list(SMOKE_SYSTEMS[w]) for w in configs}
    unknown = {s for systems in chosen.values() for s in systems} - set(ALL_SYSTEMS.split(","))
    if unknown:
        raise SystemExit(f"unknown system {sorted(unknown)[0]!r}; choose from {ALL_SYSTEMS}")
    if any(s.endswith("postgres") for systems in chosen.values() for s in systems) and not postgres_ok():
        print(f"PostgreSQL not reachable at {POSTGRES}: skipping the postgres systems")
        for w, systems in chosen.items():
            kept = [s for s in systems if not s.endswith("postgres")]
            # the smoke still runs each workload: on SQLite when it was to run on PostgreSQL only
            chosen[w] = kept or ([s.replace("postgres", "sqlite") for s in systems] if args.smoke else [])
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                    **{lib: version(lib) for lib in ("hpo", "optuna", "ray", "torch", "scikit-learn")}},
        "smoke": args.smoke, "config": {}, "workloads": {},
        # each peer's torch seed per trial (before c7117b3 Ray Tune's trials all had the study's seed;
        # before "hpo's" the peers gave seed + trial number, the same as hpo's for seed 0 only)
        "trial_seeds": {"hpo": "hpo's", "optuna": "hpo's", "raytune": "hpo's"},
    }
    timeout_s = 300 if args.smoke else 3600
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "study").mkdir()
        for module in OBJECTIVE_MODULES:
            shutil.copy(HERE / module, tmp / "study" / module)
        warm_page_cache(tmp)
        for workload, cfg in configs.items():
            results["config"][workload] = cfg
            cfg["objective_import_s"] = objective_import_s(tmp / "study", cfg["spec"]["objective"],
                                                           max(1, int(cfg["spec"]["resources"]["cpu"])))
            systems = [s for s in chosen[workload] if s not in cfg["skip"]]
            for system in chosen[workload]:
                if system in cfg["skip"]:
                    print(f"{workload:<12} {system:<16} not run: {cfg['skip'][system]}")
            runs: dict[str, list[dict]] = {s: [] for s in systems}
            for i, seed in enumerate(cfg["seeds"]):
                for system in systems[i % len(systems):] + systems[: i % len(systems)]:
                    r = run_system(system, workload, cfg, seed, tmp, timeout_s)
                    if r["first_call_s"] is not None:  # less what importing the objective alone takes
                        r["own_startup_s"] = round(r["first_call_s"] - statistics.median(cfg["objective_import_s"]), 3)
                    runs[system].append(r)
                    failed = f", {r['failed']} FAILED trials" if r["failed"] else ""
                    print(f"{workload:<12} {system:<16} seed {seed}: wall {r['wall_s']:.2f} s, CPU {r['cpu_s']:.1f} s, "
                          f"best {r['best']}{failed}", flush=True)
            if runs:
                results["workloads"][workload] = {s: median_of(rs) for s, rs in runs.items()}
    if args.reuse:
        earlier = json.loads(args.reuse.read_text())
        for workload, systems_results in earlier["workloads"].items():
            if workload not in results["workloads"]:
                results["workloads"][workload] = systems_results
                results["config"][workload] = earlier["config"][workload]
                results.setdefault("reused", []).append(workload)
    results["files"] = plot(results, args.out)
    (args.out / "results.json").write_text(dump(results))
    print(table(results))


if __name__ == "__main__":
    main()
