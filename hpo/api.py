"""hpo's Python API: every CLI verb is one of these plain functions."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from hpo.driver import DriverResult, LeaseLost, Observer, StudyDriver, max_concurrency
from hpo.errors import HpoError
from hpo.jobs import FINISHED, Job, Jobs, JobState, default_owner, utcnow
from hpo.ray_runtime import ray_session
from hpo.spec import StudySpec, load_spec
from hpo.store import Store
from workers.runner import resolve_objective

LEASE_S = 60.0
HEARTBEAT_S = 10.0


@dataclass
class RunSummary:
    study_name: str
    storage: str  # masked URL
    state: str
    message: str | None
    direction: str
    n_trials: int | None
    complete: int
    pruned: int
    failed: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_objective(spec: StudySpec) -> None:
    """Import the objective in this process, so a typo fails before anything is written."""
    try:
        resolve_objective(spec.objective, str(spec.base_dir))
    except Exception as exc:  # ImportError, SyntaxError, errors raised at import time
        raise HpoError(f"objective {spec.objective!r} cannot be imported: {type(exc).__name__}: {exc}") from None


def upgrade_db(storage: str | None = None) -> str:
    """Create or migrate hpo's tables; returns the masked URL of the store."""
    store = Store(storage)
    try:
        store.check()
        store.upgrade()
    finally:
        store.dispose()
    return store.masked


def run(
    spec: StudySpec | str | Path,
    *,
    storage: str | None = None,
    ray_address: str | None = None,
    name: str | None = None,
    n_trials: int | None = None,
    observer: Observer | None = None,
) -> RunSummary:
    """Submit a study and run it to its budget in this process (`hpo run`).

    Everything the user gave is validated (spec, objective, storage, Ray capacity) before the
    first write. A study of the same name that was interrupted is resumed; a finished one is an
    error.
    """
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec, name=name, n_trials=n_trials)
    check_objective(spec)
    store = Store(storage)
    started = time.monotonic()
    try:
        store.check()
        with ray_session(ray_address):
            max_concurrency(spec)  # e.g. gpu per trial on a cluster without GPUs
            jobs = Jobs(store.engine)
            _refuse_unrunnable(jobs, store, spec)
            store.upgrade()
            job = _create_or_resume(jobs, store, spec)
            owner = default_owner()
            if not jobs.claim(job.study_name, owner, LEASE_S):
                raise HpoError(f"study {spec.name!r} is being run by {job.owner}")
            study = optuna.load_study(
                study_name=spec.name, storage=store.optuna,
                sampler=spec.build_sampler(), pruner=spec.build_pruner(),
            )
            driver = StudyDriver(
                study, spec, observer=observer,
                heartbeat=lambda: jobs.renew(spec.name, owner, LEASE_S), heartbeat_interval=HEARTBEAT_S,
            )
            try:
                result = driver.run()
            except LeaseLost:
                raise HpoError(f"study {spec.name!r} was taken over by another owner") from None
            except BaseException:
                jobs.finish(spec.name, owner, JobState.INTERRUPTED, "interrupted")
                raise
            jobs.finish(spec.name, owner, result.state, result.message)
            return _summary(spec, store, result, time.monotonic() - started)
    finally:
        store.dispose()


def _refuse_unrunnable(jobs: Jobs, store: Store, spec: StudySpec) -> None:
    """Before the first write: refuse a name that belongs to a finished or foreign study."""
    from sqlalchemy import inspect

    tables = set(inspect(store.engine).get_table_names())
    job = jobs.get(spec.name) if "hpo_jobs" in tables else None
    if job is not None:
        if job.state in FINISHED:
            raise HpoError(
                f"study {spec.name!r} already exists in {store.masked} ({job.state.lower()}); "
                "give another name with --name"
            )
        if job.state == JobState.RUNNING and job.lease_expires_at and job.lease_expires_at > utcnow():
            raise HpoError(f"study {spec.name!r} is being run by {job.owner}")
    elif "studies" in tables and spec.name in optuna.get_all_study_names(store.optuna):
        raise HpoError(f"an Optuna study named {spec.name!r} exists in {store.masked} that hpo did not create")


def _create_or_resume(jobs: Jobs, store: Store, spec: StudySpec) -> Job:
    job = jobs.get(spec.name)
    if job is not None:
        return job
    optuna.create_study(
        study_name=spec.name, storage=store.optuna, direction=spec.direction, load_if_exists=True
    )
    return jobs.create(spec.name, spec.to_json())


def _summary(spec: StudySpec, store: Store, result: DriverResult, elapsed: float) -> RunSummary:
    best = result.best
    return RunSummary(
        study_name=spec.name,
        storage=store.masked,
        state=result.state.value,
        message=result.message,
        direction=spec.direction,
        n_trials=spec.n_trials,
        complete=result.counts.complete,
        pruned=result.counts.pruned,
        failed=result.counts.failed,
        best_trial=best.number if best else None,
        best_value=best.value if best else None,
        best_params=best.params if best else None,
        elapsed_s=round(elapsed, 3),
    )
