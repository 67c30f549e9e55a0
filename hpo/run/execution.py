"""Running one claimed job: load its study, drive it, record how it ended. Used by `hpo run`
(in the foreground) and by each study that `hpo serve` runs."""

from __future__ import annotations

import threading
from collections.abc import Callable

import optuna

from hpo.defaults import HEARTBEAT_S, LEASE_S
from hpo.errors import StudyMissing
from hpo.run.backend import TrialBackend
from hpo.run.checkpoints import CheckpointKeeper
from hpo.run.driver import DriverResult, LeaseLost, StudyDriver
from hpo.run.events import Observer
from hpo.spec.study import StudySpec
from hpo.store.artifacts import artifact_root, study_artifacts
from hpo.store.database import Store
from hpo.store.jobs import Jobs, JobState
from hpo.store.optuna_adapter import may_own, study_id_of
from hpo.store.owned_storage import OwnedStudyStorage


def run_job(
    store: Store,
    spec: StudySpec,
    owner: str,
    *,
    observer: Observer | None = None,
    stop: threading.Event | None = None,
    concurrency_cap: Callable[[], int] | None = None,
    lease_s: float = LEASE_S,
    heartbeat_s: float = HEARTBEAT_S,
    backend: TrialBackend | None = None,
    crash_backoff_s: float | None = None,
) -> DriverResult:
    """Drive the study of a job that ``owner`` has claimed, then record its end and release it.

    Raises driver.LeaseLost if another owner took the job over (nothing more is written then).
    A crash of the driver (an exception that is not a trial's) is counted on the job: it is
    claimable again after ``crash_backoff_s`` (doubling per crash), FAILED after a few.
    """
    jobs = Jobs(store.engine)
    if not store.has_study(spec.name):  # deleted outside hpo while it was queued
        error = StudyMissing(spec.name)
        jobs.finish(spec.name, owner, JobState.FAILED, str(error))
        raise error
    if jobs.renew(spec.name, owner, lease_s) is not None:  # the checks since the claim took a lease's length
        raise LeaseLost(spec.name)
    try:
        # We hold the lease: the study's reads can come from memory, its writes still go to SQL
        # (batched) — where the Optuna version and the store's schema are ones hpo was tested with.
        storage = (OwnedStudyStorage(store.optuna, spec.name, engine=store.writer) if may_own(store.optuna)
                   else store.optuna)
        study = optuna.load_study(
            study_name=spec.name, storage=storage, sampler=spec.build_sampler(), pruner=spec.build_pruner()
        )
        driver = StudyDriver(
            study, spec, observer=observer,
            heartbeat=lambda: jobs.renew(spec.name, owner, lease_s), heartbeat_interval=heartbeat_s,
            stop=stop, concurrency_cap=concurrency_cap, owner=owner, engine=store.engine, lease_s=lease_s,
            backend=backend, checkpoints=checkpoint_keeper(store, spec, study),
        )
        result = driver.run()
    except LeaseLost:
        raise
    except Exception as exc:
        if not store.has_study(spec.name):  # deleted outside hpo under the running driver
            error = StudyMissing(spec.name)
            jobs.finish(spec.name, owner, JobState.CANCELLED, f"{error} (while it ran)")
            raise error from None
        # Not a trial's error (those are data): hpo or a library crashed driving this study. Counted,
        # so that a study that crashes every time ends FAILED instead of being claimed forever.
        jobs.crashed(spec.name, owner, f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                     backoff_s=crash_backoff_s)
        raise
    except BaseException as exc:  # Ctrl-C, SIGTERM: handed back, resumed on the next run
        jobs.finish(spec.name, owner, JobState.INTERRUPTED, f"interrupted: {type(exc).__name__}")
        raise
    jobs.finish(spec.name, owner, result.state, result.message)
    return result


def checkpoint_keeper(store: Store, spec: StudySpec, study: optuna.Study) -> CheckpointKeeper:
    """The study's folder in the artifact store, and the policy of what it keeps."""
    artifacts = study_artifacts(artifact_root(store, spec.checkpoints.path), spec.name, study_id_of(study))
    return CheckpointKeeper(artifacts, spec.checkpoints.keep_best, spec.study_directions, study)
