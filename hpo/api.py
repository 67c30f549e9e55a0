"""hpo's Python API: every CLI verb is one of these plain functions.

Each takes ``storage`` (a SQLAlchemy URL; default ``HPO_STORAGE``, then ``sqlite:///hpo.db``) and
raises :class:`hpo.errors.HpoError` with one line for anything the caller can fix.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from hpo.defaults import LEASE_S, MAX_STUDIES, POLL_S
from hpo.errors import HpoError, StudyMissing
from hpo.read.queries import (
    StudySummary,
    export_study,
    get_job,
    list_jobs,
    summarize,
    summarize_or_missing,
    trial_rows,
)
from hpo.run.driver import LeaseLost, plan_placement, trial_slot
from hpo.run.events import Observer
from hpo.run.execution import run_job
from hpo.run.submission import apply_objective_check, check_new_study, check_objective, create_study, locate_objective
from hpo.spec.study import StudySpec, load_spec
from hpo.store.artifacts import artifact_root, study_artifacts
from hpo.store.database import Store
from hpo.store.jobs import FINISHED, Jobs, JobState, default_owner
from hpo.store.optuna_adapter import study_id_of
from hpo.store.published import unpublish_all

__all__ = [
    "HpoError", "StudySummary", "best", "cancel", "delete", "export", "list_studies", "resume",
    "report", "run", "serve", "status", "submit", "trials", "upgrade_db", "wait",
]


@contextlib.contextmanager
def _store(storage: str | None) -> Iterator[Store]:
    store = Store(storage)
    try:
        yield store
    finally:
        store.dispose()


def _spec(spec: StudySpec | str | Path, **overrides: Any) -> StudySpec:
    return spec if isinstance(spec, StudySpec) else load_spec(spec, **overrides)


def upgrade_db(storage: str | None = None) -> str:
    """Create or migrate hpo's tables; returns the masked URL of the store."""
    with _store(storage) as store:
        store.check()
        store.upgrade()
        return store.masked


def submit(spec: StudySpec | str | Path, *, storage: str | None = None, name: str | None = None,
           n_trials: int | None = None) -> str:
    """Validate a spec and queue its study for `hpo serve`; returns the study name."""
    spec = _spec(spec, name=name, n_trials=n_trials)
    check_objective(spec)
    with _store(storage) as store:
        store.check()
        check_new_study(store, spec, resume=False)
        store.upgrade()
        create_study(store, spec)
    return spec.name


BACKENDS = ("auto", "local", "ray")


def choose_backend(spec: StudySpec, backend: str = "auto", ray_address: str | None = None) -> str:
    """Where `hpo run` runs the trials: "local" (worker processes of this machine) or "ray".

    ``auto``: Ray when it is asked for (an address, ``HPO_RAY_ADDRESS``, or a Ray runtime this
    process is already connected to) or the trials need GPUs (Ray places them); otherwise local
    processes, which start in a fraction of the time a Ray runtime takes and run the same way.
    A GPU study that would start a new local Ray runtime on a machine without GPUs is refused
    before the start, or with ``cpu_fallback`` runs on local processes.
    """
    import os
    import sys

    if backend not in BACKENDS:
        raise HpoError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    asked = ray_address or os.environ.get("HPO_RAY_ADDRESS")
    if backend == "local":
        if asked:
            raise HpoError("--backend local runs on this machine only; drop --ray-address (or HPO_RAY_ADDRESS)")
        if spec.resources.gpu > 0 and not spec.resources.cpu_fallback:
            raise HpoError(f"the spec asks for gpu: {spec.resources.gpu:g} per trial; the local backend "
                           "runs no GPU trials (use --backend ray, or resources.cpu_fallback: true)")
        return "local"
    ray = sys.modules.get("ray")
    if asked or (ray is not None and ray.is_initialized()):
        return "ray"
    if spec.resources.gpu > 0 and not _no_local_gpus(spec):
        return "ray"  # Ray places the GPUs (where it cannot be asked first, its runtime is)
    return "ray" if backend == "ray" else "local"  # a cpu_fallback study without GPUs runs on CPUs


def _no_local_gpus(spec: StudySpec) -> bool:
    """True where a new local Ray runtime would have no GPUs and the spec falls back to CPUs;
    refused where it does not. False where there are GPUs, or Ray cannot be asked before it
    starts (then the started runtime is asked, as for a cluster)."""
    from hpo.run.ray_adapter import local_gpus

    if local_gpus() != 0:
        return False
    if not spec.resources.cpu_fallback:
        raise HpoError(f"the spec asks for gpu: {spec.resources.gpu:g} per trial but this machine has no GPUs "
                       "for the Ray runtime hpo would start here (set resources.cpu_fallback: true to run on "
                       "CPUs, or --ray-address to use a cluster with GPUs)")
    return True


def run(
    spec: StudySpec | str | Path,
    *,
    storage: str | None = None,
    ray_address: str | None = None,
    name: str | None = None,
    n_trials: int | None = None,
    observer: Observer | None = None,
    backend: str = "auto",
) -> StudySummary:
    """Submit a study and run it to its budget in this process (`hpo run`).

    Everything the user gave is validated (spec, objective, storage, capacity) before the first
    write. A study of the same name that was interrupted is resumed; a finished one is an error.
    ``backend``: where the trials run (see :func:`choose_backend`).
    """
    spec = _spec(spec, name=name, n_trials=n_trials)
    kind = choose_backend(spec, backend, ray_address)
    locate_objective(spec)  # a typo fails at once; the import itself is checked in a worker
    if kind == "local":
        return _run_local(spec, storage, observer)
    from hpo.run.ray_backend import prepare_workers
    from hpo.run.ray_runtime import ray_session

    with _store(storage) as store:
        store.check()
        check_new_study(store, spec, resume=True)  # a taken name fails before Ray starts
        started = time.monotonic()
        with ray_session(ray_address):
            timings = {"backend": "ray", "ray_start_s": round(time.monotonic() - started, 3)}
            # e.g. gpu per trial on a cluster without GPUs; then the objective is imported and
            # checked in the study's first workers (which keep it for the trials)
            prepare_workers(spec, plan_placement(spec))
            timings["first_worker_s"] = round(time.monotonic() - started - timings["ray_start_s"], 3)
            _drive(store, spec, observer)
        summary = summarize(store, get_job(store, spec.name))
        summary.timings = timings
        return summary


def _run_local(spec: StudySpec, storage: str | None, observer: Observer | None) -> StudySummary:
    from hpo.run.local_backend import LocalBackend

    started = time.monotonic()
    backend = LocalBackend()
    placement = plan_placement(spec, backend.capacity(), backend.where)
    try:
        # The workers import the objective while the driver opens the store.
        backend.start(trial_slot(spec, placement), placement.concurrency)
        with _store(storage) as store:
            store.check()
            check_new_study(store, spec, resume=True)  # a taken name fails without waiting for the imports
            apply_objective_check(spec, *backend.check(spec.objective_args))
            timings = {"backend": "local", "first_worker_s": round(time.monotonic() - started, 3)}
            _drive(store, spec, observer, backend)
            summary = summarize(store, get_job(store, spec.name))
    finally:
        backend.close()
    summary.timings = timings
    return summary


def _drive(store: Store, spec: StudySpec, observer: Observer | None, backend=None) -> None:
    """Create (or resume) the study's job, claim it and drive it to its end here."""
    # Again, right before the first write: run()'s early check came before the workers' imports
    # (or Ray's start), and another process may have taken the name meanwhile.
    existing = check_new_study(store, spec, resume=True)
    store.upgrade()
    jobs = Jobs(store.engine)
    if existing is None:
        create_study(store, spec)
    else:
        jobs.set_state(spec.name, JobState.QUEUED, allowed_from={existing.state}, spec_json=spec.to_json())
    owner = default_owner()
    if not jobs.claim(spec.name, owner, lease_s=LEASE_S):
        raise HpoError(f"study {spec.name!r} is being run by another owner")
    try:
        run_job(store, spec, owner, observer=observer, backend=backend)
    except LeaseLost:
        raise HpoError(f"study {spec.name!r} was taken over by another owner") from None


def serve(
    *,
    storage: str | None = None,
    ray_address: str | None = None,
    max_studies: int = MAX_STUDIES,
    stop: threading.Event | None = None,
    poll_s: float = POLL_S,
    lease_s: float | None = None,
    stop_on_signals: bool = False,
) -> None:
    """Run queued studies until ``stop`` is set, or with ``stop_on_signals`` until SIGTERM or
    SIGINT (a second one forces the exit)."""
    from hpo.run.ray_runtime import ray_session
    from hpo.run.service import Server
    from hpo.run.service import stop_on_signals as install

    stop = stop or threading.Event()
    with _store(storage) as store:
        store.check()
        server = Server(store, max_studies=max_studies, poll_s=poll_s, **({"lease_s": lease_s} if lease_s else {}))
        server.exclusive_sqlite()  # a second serve on one SQLite file is refused before Ray starts
        with ray_session(ray_address):
            if stop_on_signals:
                install(stop)  # after Ray's init, which installs handlers of its own
            server.run(stop)


def list_studies(*, storage: str | None = None) -> list[StudySummary]:
    """Every study hpo knows in the store, oldest first."""
    with _store(storage) as store:
        store.check()
        return [summarize_or_missing(store, job) for job in list_jobs(store)]


def status(name: str, *, storage: str | None = None, cpu_watts: float | None = None,
           gpu_watts: float | None = None) -> StudySummary:
    """A study's state, counts, best value and compute (energy priced at ``cpu_watts`` per core
    and ``gpu_watts`` per GPU; defaults: ``HPO_CPU_WATTS``/``HPO_GPU_WATTS``, else 15 W and 300 W)."""
    with _store(storage) as store:
        store.check()
        return summarize(store, get_job(store, name), cpu_watts=cpu_watts, gpu_watts=gpu_watts)


def best(name: str, *, storage: str | None = None) -> StudySummary:
    """The study's best trial (single objective) or Pareto front (several objectives)."""
    summary = status(name, storage=storage)
    if summary.best_trial is None and not summary.pareto_front:
        raise HpoError(f"study {name!r} has no completed feasible trial yet")
    return summary


def trials(name: str, *, storage: str | None = None) -> list[dict[str, Any]]:
    with _store(storage) as store:
        store.check()
        return trial_rows(store, name)


def export(name: str, *, storage: str | None = None) -> dict[str, Any]:
    with _store(storage) as store:
        store.check()
        return export_study(store, name)


def cancel(name: str, *, storage: str | None = None) -> JobState:
    """Cancel a queued or running study (its owner stops it within a few seconds); returns the
    state it was in (RUNNING: its owner is stopping it now)."""
    with _store(storage) as store:
        store.check()
        job = get_job(store, name)
        movable = {JobState.QUEUED, JobState.RUNNING, JobState.INTERRUPTED}
        if not Jobs(store.engine).set_state(name, JobState.CANCELLED, allowed_from=movable, message="cancelled"):
            raise HpoError(f"study {name!r} is {job.state.lower()}; only queued, running or interrupted studies can be cancelled")
        return job.state


def resume(name: str, *, storage: str | None = None, n_trials: int | None = None) -> int | None:
    """Queue a cancelled, interrupted, failed or completed study again, optionally with a new
    total budget ``n_trials``; returns its budget now."""
    with _store(storage) as store:
        store.check()
        job = get_job(store, name)
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            raise HpoError(f"study {name!r} is already {job.state.lower()}")
        if not store.has_study(name):
            raise StudyMissing(name)
        spec = StudySpec.from_json(job.spec)
        if n_trials is not None:
            spec = spec.model_copy(update={"n_trials": n_trials})
            spec._base_dir = StudySpec.from_json(job.spec).base_dir
        if job.state == JobState.COMPLETED and spec.n_trials is not None:
            finished = summarize(store, job)
            if finished.complete + finished.pruned >= spec.n_trials:
                raise HpoError(
                    f"study {name!r} already has {finished.complete + finished.pruned} finished trials; "
                    "give a larger budget with --n-trials"
                )
        if not Jobs(store.engine).set_state(name, JobState.QUEUED, allowed_from={job.state}, spec_json=spec.to_json()):
            raise HpoError(f"study {name!r} changed state meanwhile; try again")
        return spec.n_trials


def check_deletable(name: str, *, storage: str | None = None) -> bool:
    """Raise unless ``delete`` would delete the study; returns whether its Optuna study is still
    there (False: deleted outside hpo, only hpo's job row is left)."""
    with _store(storage) as store:
        store.check()
        job = get_job(store, name)
        if job.state == JobState.RUNNING:
            raise HpoError(f"study {name!r} is running; cancel it first")
        return store.has_study(name)


def delete(name: str, *, storage: str | None = None) -> bool:
    """Delete a study and all its trials (refused while it runs). A study deleted outside hpo
    (optuna-dashboard, ``optuna delete-study``) has its job row removed; returns whether its
    Optuna study was still there."""
    there = check_deletable(name, storage=storage)
    with _store(storage) as store:
        if there:
            _delete_checkpoints(store, name)
            try:
                optuna.delete_study(study_name=name, storage=store.optuna)
            except KeyError:  # deleted outside hpo meanwhile
                there = False
        Jobs(store.engine).delete(name)
        return there


def _delete_checkpoints(store: Store, name: str) -> None:
    """Remove the study's folder in the artifact store (its trials' checkpoints) and the
    checkpoints it published as artifacts."""
    try:
        spec = StudySpec.from_json(get_job(store, name).spec)
        path = spec.checkpoints.path
    except HpoError:  # a spec hpo no longer reads: the default place
        path = None
    study = optuna.load_study(study_name=name, storage=store.optuna, sampler=optuna.samplers.RandomSampler())
    root = artifact_root(store, path)
    unpublish_all(study, root)
    study_artifacts(root, name, study_id_of(study)).remove_all()


def report(name: str, *, storage: str | None = None, output_dir: str | Path | None = None,
           cpu_watts: float | None = None, gpu_watts: float | None = None, gap_threshold: float | None = None,
           png: bool = True):
    """Write the study's report: ``report.html`` (self-contained) and, with ``png``, one PNG per
    figure, into ``output_dir`` (default ``./hpo-report-NAME/``). Returns hpo.read.report.ReportFiles."""
    from hpo.read.report import DEFAULT_GAP_THRESHOLD, write_report

    return write_report(name, storage=storage, output_dir=output_dir, cpu_watts=cpu_watts, gpu_watts=gpu_watts,
                        gap_threshold=DEFAULT_GAP_THRESHOLD if gap_threshold is None else gap_threshold, png=png)


def dashboard(*, storage: str | None = None, host: str = "127.0.0.1", port: int = 8080,
              writable: bool | None = None) -> None:
    """Serve optuna-dashboard on the store until Ctrl-C; ``writable`` None: read-only while a
    study of the store is being run, else writable."""
    from hpo.read.dashboard import serve_dashboard

    serve_dashboard(storage, host=host, port=port, writable=writable)


def wait(name: str, *, storage: str | None = None, timeout: float = 600.0, poll_s: float = 1.0) -> StudySummary:
    """Block until the study is finished (completed, failed or cancelled)."""
    deadline = time.monotonic() + timeout
    while True:
        summary = status(name, storage=storage)
        if JobState(summary.state) in FINISHED or time.monotonic() > deadline:
            return summary
        time.sleep(poll_s)
