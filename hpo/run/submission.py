"""Turning a validated spec into a study: checks before the first write, then study + job rows."""

from __future__ import annotations

import optuna
import sqlalchemy as sa

from hpo.defaults import WORKER_START_S
from hpo.errors import HpoError
from hpo.spec.study import StudySpec
from hpo.store.artifacts import artifact_root
from hpo.store.database import Store
from hpo.store.jobs import FINISHED, Job, Jobs, JobState, utcnow
from workers.buckets import Bucket, check_url, is_object_url
from workers.runner import locate_objective as locate_in_source


def check_objective(spec: StudySpec, timeout_s: float = WORKER_START_S) -> None:
    """Import the objective in a fresh worker process, so a typo fails before anything is written.

    If the objective's module defines ``check_args(objective_args, base_dir) -> dict``, it is
    called too: a ValueError there (e.g. a missing dataset column) refuses the spec, and the
    returned args (e.g. with paths made absolute) replace the spec's objective_args.
    Never in this process: `hpo submit` and `hpo serve` check many studies, whose modules may
    share a name (Python's module cache would hand one study another's module and check_args)
    and whose code has no business running in the service's process. ``hpo run`` checks in
    the study's own first workers instead.
    """
    import os

    from hpo.run.backend import Slot
    from hpo.run.local_backend import LocalBackend

    backend = LocalBackend(cpus=1)
    try:
        backend.start(Slot(objective=spec.objective, import_path=os.path.realpath(spec.base_dir), cpu=1.0), 1)
        result = backend.check(spec.objective_args, timeout_s)
    finally:
        backend.close()
    apply_objective_check(spec, *result)


def locate_objective(spec: StudySpec) -> None:
    """Without running the objective's module: it exists, parses and defines the objective's
    name, so a typo fails at once (``hpo run`` imports it only in its workers, after Ray starts)."""
    error = locate_in_source(spec.objective, str(spec.base_dir))
    if error is not None:
        raise HpoError(error)


def apply_objective_check(spec: StudySpec, error: str | None, args: dict) -> None:
    if error is not None:
        raise HpoError(error)
    spec.objective_args = args


def _tables(store: Store) -> set[str]:
    if store.is_sqlite and not store.exists():
        return set()
    return set(sa.inspect(store.engine).get_table_names())


def check_new_study(store: Store, spec: StudySpec, *, resume: bool) -> Job | None:
    """Before the first write: refuse a name taken by a finished, running or foreign study.

    With ``resume`` (``hpo run``) an unfinished hpo study of that name is returned to be resumed;
    without it (``hpo submit``) any existing study of that name is an error.
    """
    check_artifact_store(store, spec)
    tables = _tables(store)
    job = Jobs(store.engine).get(spec.name) if "hpo_jobs" in tables else None
    if job is not None and _orphaned(store, job):
        job = None  # its study was deleted outside hpo: create_study replaces the leftover job row
    if job is not None:
        running = job.state == JobState.RUNNING and job.lease_expires_at and job.lease_expires_at > utcnow()
        if job.state in FINISHED or not resume:
            raise HpoError(
                f"study {spec.name!r} already exists in {store.masked} ({job.state.lower()}); "
                "give another name with --name, or use hpo resume"
            )
        if running:
            raise HpoError(f"study {spec.name!r} is being run by {job.owner}")
        return job
    if "studies" in tables and spec.name in optuna.get_all_study_names(store.optuna):
        raise HpoError(f"an Optuna study named {spec.name!r} exists in {store.masked} that hpo did not create")
    if spec.warm_start is not None:
        source = spec.warm_start.study
        if "studies" not in tables or source not in optuna.get_all_study_names(store.optuna):
            raise HpoError(f"warm_start: no study named {source!r} in {store.masked}")
    return None


def check_artifact_store(store: Store, spec: StudySpec) -> None:
    """A bucket named for checkpoints answers with this machine's credentials (a folder needs
    no check: it is created when the first checkpoint is written)."""
    root = artifact_root(store, spec.checkpoints.path)
    if not is_object_url(root):
        return
    try:
        check_url(root)
        Bucket(root).child(".hpo-probe").keys()  # one listing of an empty prefix
    except Exception as exc:  # noqa: BLE001 - the cloud library's errors, named in one line
        shown = root.split("?")[0] if "@" not in root else "the checkpoints URL"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise HpoError(f"checkpoints: {shown} cannot be used: {type(exc).__name__}: {detail}") from None


def _orphaned(store: Store, job: Job) -> bool:
    """A job row whose Optuna study was deleted outside hpo (optuna-dashboard, `optuna
    delete-study`) and that no live owner runs: what is left of a deleted study."""
    live = job.state == JobState.RUNNING and job.lease_expires_at and job.lease_expires_at > utcnow()
    return not live and not store.has_study(job.study_name)


def create_study(store: Store, spec: StudySpec) -> Job:
    """Create the Optuna study (metric names, enqueued and warm-start trials) and its QUEUED job
    (replacing the job row left by a study deleted outside hpo)."""
    jobs = Jobs(store.engine)
    leftover = jobs.get(spec.name) if "hpo_jobs" in _tables(store) else None
    if leftover is not None and _orphaned(store, leftover):
        jobs.delete(spec.name)
    study = optuna.create_study(
        study_name=spec.name, storage=store.optuna, directions=spec.study_directions, load_if_exists=True
    )
    if spec.metrics:
        study.set_metric_names(spec.metrics)
    for params in spec.enqueue:
        study.enqueue_trial(params, user_attrs={"hpo:source": "enqueue"}, skip_if_exists=True)
    if spec.warm_start:
        seed_from_study(study, store, spec)
    return jobs.create(spec.name, spec.to_json())


def seed_from_study(study: optuna.Study, store: Store, spec: StudySpec) -> int:
    """Enqueue the top-K complete trials of an earlier study, re-evaluated on this study.

    Parameters outside this study's space are dropped (they are sampled afresh); values outside
    a parameter's new range are dropped too. Returns how many trials were enqueued.
    """
    source = optuna.load_study(study_name=spec.warm_start.study, storage=store.optuna)
    trials = source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(source.directions) == 1:
        reverse = source.direction == optuna.study.StudyDirection.MAXIMIZE
        trials.sort(key=lambda t: t.value, reverse=reverse)
    else:
        front = {t.number for t in source.best_trials}
        trials.sort(key=lambda t: t.number not in front)
    space = spec.search_space.params
    enqueued = 0
    for trial in trials[: spec.warm_start.top_k]:
        params = {k: v for k, v in trial.params.items() if k in space and space[k].contains(v)}
        if params:
            study.enqueue_trial(
                params, user_attrs={"hpo:source": f"warm_start:{source.study_name}#{trial.number}"},
                skip_if_exists=True,
            )
            enqueued += 1
    return enqueued
