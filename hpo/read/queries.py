"""The read side: what `hpo list`, `status`, `best`, `trials` and `export` show, from the store.

Everything is read back from the database (the jobs table and Optuna's tables), so the CLI
shows exactly what optuna-dashboard shows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError, StudyMissing
from hpo.read.accounting import node_labels, study_compute, worker_startup
from hpo.spec.study import StudySpec
from hpo.store.attrs import ATTEMPT_ATTR, ERROR_ATTR, INFO_ATTR, PBT_ATTR, RETRY_OF_ATTR, was_stopped
from hpo.store.database import Store
from hpo.store.jobs import Job, Jobs


@dataclass
class StudySummary:
    study_name: str
    storage: str  # masked URL
    state: str
    message: str | None
    owner: str | None
    directions: list[str]
    metrics: list[str] | None
    n_trials: int | None
    complete: int
    pruned: int
    failed: int
    running: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    elapsed_s: float | None
    infeasible: int = 0
    # FAIL trials that hpo stopped (cancel, hand-back, Ctrl-C/SIGTERM, a lost owner): not in failed
    stopped: int = 0
    # Multi-objective studies: the (feasible) Pareto front instead of one best trial.
    pareto_front: list[dict[str, Any]] | None = None
    # Compute used by the trials and saved by pruning, with an energy estimate (hpo.read.accounting).
    compute: dict[str, Any] | None = None
    # Population Based Training: the values the best model trained with, segment by segment
    best_schedule: list[dict[str, Any]] | None = None
    # `hpo run` only: seconds to start (or join) Ray, and until the first worker had checked the
    # objective (its process start and the objective's import)
    timings: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def get_job(store: Store, name: str) -> Job:
    job = Jobs(store.engine).get(name) if store.exists() and _has_jobs(store) else None
    if job is None:
        raise HpoError(f"no study named {name!r} in {store.masked}")
    return job


def _has_jobs(store: Store) -> bool:
    import sqlalchemy as sa

    return "hpo_jobs" in sa.inspect(store.engine).get_table_names()


def list_jobs(store: Store) -> list[Job]:
    if not store.exists() or not _has_jobs(store):
        return []
    return Jobs(store.engine).all()


def load_study(store: Store, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=store.optuna)
    except KeyError:  # Optuna's "Record does not exist."
        raise StudyMissing(name) from None


MISSING = "MISSING"  # the state shown for a job whose Optuna study was deleted outside hpo


def summarize_or_missing(store: Store, job: Job, **watts: float | None) -> StudySummary:
    """`hpo list`: a study deleted outside hpo is a row of its own, not an error for the list."""
    try:
        return summarize(store, job, **watts)
    except StudyMissing:
        spec = StudySpec.from_json(job.spec)
        return StudySummary(
            study_name=job.study_name, storage=store.masked, state=MISSING,
            message="deleted outside hpo; `hpo delete` removes what is left", owner=job.owner,
            directions=spec.study_directions, metrics=spec.metrics, n_trials=spec.n_trials,
            complete=0, pruned=0, failed=0, running=0, best_trial=None, best_value=None,
            best_params=None, elapsed_s=None,
        )


def pbt_schedule(trials: list[FrozenTrial], last: FrozenTrial) -> list[dict[str, Any]]:
    """The values a PBT member's model trained with, step range by step range: its segments back
    through every checkpoint it was copied from (``parent``), oldest first."""
    by_number = {t.number: t for t in trials}
    chain: list[dict[str, Any]] = []
    trial: FrozenTrial | None = last
    while trial is not None and PBT_ATTR in trial.user_attrs and len(chain) <= len(trials):
        segment = trial.user_attrs[PBT_ATTR]
        chain.append({"steps": [segment["start"], segment["end"]], "trial": trial.number,
                      "member": segment["member"], "params": dict(trial.params)})
        parent = segment.get("parent")
        trial = by_number.get(parent) if parent is not None else None
    return chain[::-1]


def summarize(
    store: Store, job: Job, *, cpu_watts: float | None = None, gpu_watts: float | None = None
) -> StudySummary:
    spec = StudySpec.from_json(job.spec)
    study = load_study(store, job.study_name)
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    stopped = sum(was_stopped(t) for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    feasible = [t for t in complete if all(v <= 0 for v in t.constraints.values())]
    best, front = None, None
    if spec.is_multi_objective:
        front = [
            {"number": t.number, "values": t.values, "params": t.params}
            for t in sorted(study.best_trials, key=lambda t: t.values)
        ]
    elif feasible:
        best = study.best_trial
    elapsed = None
    if job.started_at:
        elapsed = round(((job.finished_at or job.updated_at) - job.started_at).total_seconds(), 3)
    return StudySummary(
        study_name=job.study_name,
        storage=store.masked,
        state=job.state.value,
        message=job.message,
        owner=job.owner,
        directions=spec.study_directions,
        metrics=spec.metrics,
        n_trials=spec.n_trials,
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL] - stopped,
        stopped=stopped,
        running=count[TrialState.RUNNING],
        best_trial=best.number if best else None,
        best_value=best.value if best else None,
        best_params=best.params if best else None,
        best_schedule=pbt_schedule(trials, best) if best is not None and PBT_ATTR in best.user_attrs else None,
        elapsed_s=elapsed,
        infeasible=len(complete) - len(feasible),
        pareto_front=front,
        compute=study_compute(trials, spec.objective_args, cpu_watts=cpu_watts, gpu_watts=gpu_watts),
    )


def trial_row(trial: FrozenTrial, nodes: dict[str, str] | None = None) -> dict[str, Any]:
    """One trial as ``hpo trials`` shows it; ``nodes``: readable names of node ids (node_labels)."""
    info = trial.user_attrs.get(INFO_ATTR) or {}
    duration = None
    if trial.datetime_start and trial.datetime_complete:
        duration = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "stopped": was_stopped(trial),  # FAIL because hpo stopped it (cancel, hand-back), not an error
        "attempt": int(trial.user_attrs.get(ATTEMPT_ATTR, info.get("attempt", 1))),
        "retry_of": trial.user_attrs.get(RETRY_OF_ATTR),
        "values": trial.values,
        "params": trial.params,
        "steps": len(trial.intermediate_values),
        # steps it continued from a checkpoint (retry, hand-back, resume) instead of training again
        "resumed_steps": int(info.get("resumed_steps") or 0),
        "duration_s": duration,  # run time: from when its worker started it (not its ask)
        "queued_s": info.get("queued_s"),  # how long it waited for a free slot after its ask
        "node": (nodes or {}).get(info.get("node", ""), info.get("host") or info.get("node", "")[:12]),
        "pid": info.get("pid"),  # the worker process that ran it
        "cold_start": bool(info.get("cold_start")),  # its first trial: it paid the process's start-up
        "error": _last_line(trial.user_attrs.get(ERROR_ATTR)),
    }


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def trial_rows(store: Store, name: str) -> list[dict[str, Any]]:
    get_job(store, name)
    trials = load_study(store, name).get_trials(deepcopy=False)
    nodes = node_labels(trials)
    return [trial_row(t, nodes) for t in trials]


def export_study(store: Store, name: str) -> dict[str, Any]:
    """The whole study as plain data: job, spec, and every trial with its learning curve."""
    job = get_job(store, name)
    study = load_study(store, name)
    return {
        "study_name": name,
        "state": job.state.value,
        "message": job.message,
        "spec": json.loads(job.spec),
        "directions": [d.name.lower() for d in study.directions],
        "metric_names": study.metric_names,
        "workers": worker_startup(study.get_trials(deepcopy=False)),
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "params": t.params,
                "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                "constraints": t.constraints,
                "user_attrs": t.user_attrs,
                "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            }
            for t in study.get_trials(deepcopy=False)
        ],
    }
