"""The study driver: sole owner of one Optuna study while it runs.

It asks the study for parameters, has a trial backend run each trial with the trial's resources
(long-lived Ray workers by default), answers the workers' reports with the pruner's decision (so
pruning works across the Ray boundary), and tells the study each result. Workers never touch the
database. Every decision is the driver's (budget, retries, failure limit, timeouts, cancel, lease
loss); the backend and the clock are seams, so that policy is tested on simulated ones too.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from hpo.defaults import LEASE_S, WORKER_START_S
from hpo.errors import HpoError
from hpo.run.ask_ahead import AskAhead
from hpo.run.backend import Finished, Report, Slot, TrialBackend
from hpo.run.checkpoints import CheckpointKeeper
from hpo.run.clock import Clock, SystemClock
from hpo.run.events import Best, Counts, Observer
from hpo.run.pbt import PopulationBasedTraining
from hpo.run.promotion import PromotionSchedule
from hpo.run.recorder import StudyRecorder
from hpo.run.schedule import Enqueue, Schedule
from hpo.spec.study import StudySpec
from hpo.store.attrs import ATTEMPT_ATTR, INFO_ATTR, LINEAGE_ATTR, PBT_ATTR, PROMOTION_ATTR, RESUMES_ATTR, RETRY_OF_ATTR, was_stopped
from hpo.store.jobs import JobState
from hpo.store.optuna_adapter import trial_id as id_of
from workers.reporter import trial_seed as derive_seed
from workers.runner import TrialOutcome, TrialTask

log = logging.getLogger("hpo.run.driver")


@dataclass
class DriverResult:
    state: JobState
    message: str | None
    counts: Counts
    best: Best | None


@dataclass
class _Running:
    trial: optuna.Trial
    task: TrialTask
    params: dict[str, Any]
    attempt: int = 1
    started: float | None = None  # None while prepared, waiting for a slot to free
    began: float | None = None  # when its worker said it began it (after the worker's start-up)
    asked: float = 0.0  # when Optuna's ask made it (driver clock): started - asked is its queued time
    asked_at: datetime | None = None  # the same, wall clock: what Optuna stamped as its start


def trial_seed(spec: StudySpec, study_name: str, number: int) -> int:
    """A trial's seed: from the study seed (or the study name) and the trial number."""
    return derive_seed(spec.seed if spec.seed is not None else zlib.crc32(study_name.encode()), number)


@dataclass(frozen=True)
class Placement:
    """What each trial asks Ray for, and how many trials run at once."""

    cpu: float
    gpu: float
    memory: int | None
    concurrency: int
    note: str | None = None
    saturates: bool = False  # the cluster holds no more than `concurrency` such trials at once


def plan_placement(spec: StudySpec, capacity: tuple[float, float] | None = None,
                   where: str = TrialBackend.where) -> Placement:
    """Check the spec's resources against the (CPUs, GPUs) of ``where``, by default the connected
    Ray cluster's; fail fast on what can never be placed."""
    if capacity is None:
        from hpo.run.ray_runtime import cluster_capacity

        capacity = cluster_capacity()
    cpus, gpus = capacity
    res = spec.resources
    gpu, note = res.gpu, None
    if gpu > 0 and gpus <= 0:
        if not res.cpu_fallback:
            raise HpoError(
                f"the spec asks for gpu: {gpu:g} per trial but {where} has no GPUs "
                "(set resources.cpu_fallback: true to run on CPUs instead)"
            )
        gpu, note = 0.0, f"{where} has no GPUs: trials run on CPUs (cpu_fallback)"
    if gpu > 0 and gpu > gpus:
        raise HpoError(f"the spec asks for gpu: {gpu:g} per trial but {where} has {gpus:g} GPUs")
    if res.cpu > cpus:
        raise HpoError(f"the spec asks for cpu: {res.cpu:g} per trial but {where} has {cpus:g} CPUs")
    fits = int(cpus // res.cpu)  # trials the cluster holds at once (cpu > 0: the spec checks it)
    if gpu > 0:
        fits = min(fits, int(gpus // gpu))
    # Each running trial holds a worker with its resources: no more run at once than fit (a worker
    # waiting to be placed would hold its trial back while the placed ones take the next trials).
    fits = max(1, fits)
    concurrency = min(spec.max_concurrent_trials or fits, fits)
    return Placement(cpu=res.cpu, gpu=gpu, memory=res.memory, concurrency=concurrency, note=note,
                     saturates=concurrency >= fits)


def trial_slot(spec: StudySpec, placement: Placement) -> Slot:
    """The kind of worker a study's trials run in: its code's identity and its resources."""
    import_path = os.path.realpath(spec.base_dir)
    return Slot(objective=spec.objective, import_path=import_path, cpu=placement.cpu,
                gpu=placement.gpu, memory=placement.memory, version=_module_version(spec.objective, import_path))


def _module_version(objective: str, import_path: str) -> str | None:
    """The objective's module file (when it lies in the import path) by modification time and
    size: a worker that imported an earlier version of the file is not reused for it."""
    module = objective.partition(":")[0].replace(".", os.sep)
    for candidate in (f"{module}.py", os.path.join(module, "__init__.py")):
        try:
            stat = os.stat(os.path.join(import_path, candidate))
        except OSError:
            continue
        return f"{candidate}:{stat.st_mtime_ns}:{stat.st_size}"
    return None


class StudyDriver:
    """Runs one study to its budget. Not thread-safe: one driver per study, one thread."""

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        *,
        observer: Observer | None = None,
        heartbeat: Callable[[], JobState | None] | None = None,
        heartbeat_interval: float = 10.0,
        poll_interval: float = 1.0,
        flush_interval: float = 1.0,
        stop: threading.Event | None = None,
        concurrency_cap: Callable[[], int] | None = None,
        owner: str = "",
        engine: Engine | None = None,
        lease_s: float = LEASE_S,
        backend: TrialBackend | None = None,
        clock: Clock | None = None,
        checkpoints: CheckpointKeeper | None = None,
        ask_ahead: AskAhead | None = None,
        worker_start_s: float = WORKER_START_S,
    ) -> None:
        """``heartbeat`` renews the owner's lease: None while held, else the job's new state
        (CANCELLED stops the study; anything else means another owner took it over).
        ``stop`` hands the study back (running trials are failed, to be re-run by the next
        owner); ``concurrency_cap`` bounds trials in flight (a fair share of a shared cluster).
        Reports reach the database at least every ``flush_interval`` seconds (and with every
        trial's start and end); the pruner reads them from memory at once. ``backend`` runs
        the trials (default: long-lived Ray workers); ``clock`` measures every interval.
        ``checkpoints``: the study's artifact folders (None: trials keep no checkpoints).
        ``ask_ahead``: when one trial more than the slots is prepared (default: where asks take
        a noticeable share of a trial's time; see hpo.run.ask_ahead). With a trial_timeout, a
        trial whose worker has not begun it ``worker_start_s`` (or trial_timeout, if longer)
        after its launch fails: its worker never got ready (an import that hangs)."""
        if backend is None:
            from hpo.run.ray_backend import RayBackend

            backend = RayBackend(poll_interval=poll_interval)
        self.backend = backend
        self.clock = clock or SystemClock()
        self.checkpoints = checkpoints
        self.ask_ahead = ask_ahead or AskAhead()
        self.worker_start_s = worker_start_s
        self.schedule = _schedule(spec, study.study_name)
        if self.schedule is not None and checkpoints is None:
            raise HpoError("schedule pbt and pruner promotion need checkpoints (an artifact store)")
        self.study = study
        self.spec = spec
        self.recorder = StudyRecorder(study, owner=owner, engine=engine, lease_s=lease_s)
        self.lease_s = lease_s
        self.observer = observer
        self.heartbeat = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        self.flush_interval = flush_interval
        self._next_flush = 0.0
        self.stop = stop or threading.Event()
        self.concurrency_cap = concurrency_cap
        self.owner = owner
        self.counts = Counts()
        self._decisions = True  # whether workers wait for a prune decision on each report (set by run)
        self.best: Best | None = None
        self._running: dict[str, _Running] = {}  # by attempt key; launched and prepared trials
        self._stop_reason: tuple[JobState, str] | None = None
        self._terminal_failures = 0  # failures that were not retried; they count for the limit
        self._deadline: float | None = None  # the study's timeout, on self.clock

    # -- public -----------------------------------------------------------------------------

    def run(self) -> DriverResult:
        self.placement = plan_placement(self.spec, self.backend.capacity(), self.backend.where)
        limit = self.placement.concurrency
        # One trial prepared beyond the running ones (asked, parameters stored) is launched the
        # moment a slot frees, right after the finished trial is told: no idle gap for the ask.
        # Only where the cluster's resources cap the concurrency anyway, not on a shared serve,
        # where the slot that frees may be another study's fair share, and only while asks take
        # a noticeable share of a trial's time (it samples with one result fewer).
        may_ask_ahead = self.placement.saturates and self.concurrency_cap is None
        self._recover()
        if self.observer:
            self.observer.started(self.spec, self.counts)
        self._decisions = (self.spec.pruner.name != "none" and not self.spec.is_multi_objective) or self.schedule is not None
        self._box = f"{self.study.study_name}/{uuid.uuid4().hex[:8]}"
        self._slot = trial_slot(self.spec, self.placement)
        now = self.clock.monotonic
        self._deadline = now() + self.spec.timeout if self.spec.timeout else None
        next_beat = now() + self.heartbeat_interval
        try:
            self.backend.open(self._box, self._slot)
            log.info("study %s: up to %d trials at once on %s, budget %s", self.study.study_name,
                     self.placement.concurrency, type(self.backend).__name__, self.spec.n_trials or "none")
            while True:
                if self.heartbeat and now() >= next_beat:
                    next_beat = now() + self.heartbeat_interval
                    state = self._beat()
                    if state == JobState.CANCELLED:
                        self._abandon_running("the study was cancelled")
                        self._stop_reason = (JobState.CANCELLED, "cancelled")
                        break
                    if state is not None:
                        raise LeaseLost(self.study.study_name)
                if self.stop.is_set():
                    self._abandon_running("handed back: its driver was stopped; the study re-runs it")
                    self._stop_reason = (JobState.INTERRUPTED, "stopped; resumes on the next serve")
                    break
                self._stop_overdue()
                self._flush_due()
                if self.concurrency_cap is not None:
                    limit = max(1, min(self.placement.concurrency, self.concurrency_cap()))
                ahead = 1 if may_ask_ahead and self.ask_ahead.wanted() else 0
                # One trial at a time, then whatever reports arrived meanwhile: a worker waiting
                # for a prune decision never waits behind several asks.
                if self._may_dispatch(limit + ahead):
                    self._count_outside()  # trials from outside found meanwhile count first
                    if self._may_dispatch(limit + ahead):
                        self._dispatch(start=self.counts.running < limit)
                if not self._running:
                    break
                more = self._may_dispatch(limit + ahead)
                if not more:  # workers freed but not relaunched are not needed now
                    self.backend.release_spare()
                    if self.checkpoints is not None and len(self._running) < limit:
                        self.checkpoints.ending()  # a slot is idle: the last trials run
                events = self.backend.poll(0.0 if more else self.poll_interval)
                self._note_began(events.began)
                if events.reports:
                    self._answer_reports(events.reports)
                for finished in events.finished:
                    self._collect(finished)
        except LeaseLost:
            self._abandon_running(None)  # the new owner fails and retries them
            raise
        except KeyboardInterrupt:
            self._abandon_running("interrupted (Ctrl-C); the study re-runs it when resumed")
            # a trial asked but not yet tracked (the signal landed while it was sampled) has no
            # attempt row, so a next run would take it for one of Optuna's tools': fail it now
            self._fail_left_running("interrupted (Ctrl-C) while it was asked; never started")
            raise
        except BaseException as exc:
            self._abandon_running(f"driver stopped: {type(exc).__name__}")
            self._fail_left_running(f"driver crashed: {type(exc).__name__}")
            raise
        finally:
            self.backend.close()  # workers still reporting to this run are told to stop
        self._fail_orphans()
        self.recorder.flush()
        result = self._result()
        if self.checkpoints is not None and result.state in (JobState.COMPLETED, JobState.FAILED):
            self.checkpoints.study_ended(self.recorder.trials(), self._pareto())
        log.info("study %s %s: %d complete, %d pruned, %d failed, %d stopped%s", self.study.study_name,
                 result.state.lower(), self.counts.complete, self.counts.pruned, self.counts.failed, self.counts.stopped,
                 f" ({result.message})" if result.message else "")
        return result

    def _beat(self) -> JobState | None:
        """Renew the job's and the running attempts' leases; None while we hold the job."""
        try:
            state = self.heartbeat()
            if state is None:
                self.recorder.renew_attempts(self.lease_s)
            return state
        except SQLAlchemyError as exc:
            # The store is unreachable: keep going (writes wait in the recorder) and try again
            # at the next beat; a takeover meanwhile shows up then as a lost lease.
            log.warning("lease renewal failed (%s); retrying", type(exc).__name__)
            return None

    # -- scheduling -------------------------------------------------------------------------

    def _may_dispatch(self, limit: int) -> bool:
        if self._stop_reason is not None or len(self._running) >= limit:
            return False
        if self.recorder.exhausted:
            self._stop_reason = (
                JobState.COMPLETED,
                f"the {self.spec.sampler.name} sampler has no points left after {self.counts.finished} trials",
            )
            return False
        if self._past_deadline():
            return False
        if self.schedule is not None:
            return self.schedule.ready()
        n_trials = self.spec.n_trials
        return n_trials is None or self.counts.finished + len(self._running) < n_trials

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self.clock.monotonic() >= self._deadline

    def _dispatch(self, start: bool = True) -> None:
        began = self.clock.monotonic()
        trial = self.recorder.ask()
        if self.schedule is not None:
            attrs = self.schedule.dispatched(trial.number, trial.user_attrs)
            for key, value in (attrs or {}).items():
                self.recorder.set_attr(trial, key, value)
        params = self.spec.search_space.sample(trial)
        attempt = int(trial.user_attrs.get(ATTEMPT_ATTR, 1))
        lineage = int(trial.user_attrs.get(LINEAGE_ATTR, trial.number))
        checkpoint_dir = None
        if self.checkpoints is not None:
            checkpoint_dir = self.checkpoints.folder(lineage)
            self._continue_curve(trial, lineage)
        self.recorder.attempt_started(
            id_of(trial), trial.number, attempt, trial.user_attrs.get(RETRY_OF_ATTR), self.lease_s
        )
        self.recorder.flush()  # its parameters and attempt row are stored before it runs
        key = f"{id_of(trial)}-{uuid.uuid4().hex[:8]}"
        task = TrialTask(
            key=key,
            box=self._box,
            trial_number=trial.number,
            objective=self.spec.objective,
            params=params,
            args=self.spec.objective_args,
            seed=trial_seed(self.spec, self.study.study_name, trial.number),
            cpu=self.placement.cpu,
            import_path=self._slot.import_path,
            n_values=len(self.spec.study_directions),
            metrics=tuple(self.spec.metrics) if self.spec.metrics else None,
            decisions=self._decisions,
            checkpoint_dir=checkpoint_dir,
        )
        run = _Running(trial=trial, task=task, params=params, attempt=attempt, asked=self.clock.monotonic(),
                       asked_at=datetime.now())
        self.ask_ahead.asked(run.asked - began)
        self._running[key] = run
        if start:
            self._launch(run)
        self._count_running()

    def _continue_curve(self, trial: optuna.Trial, lineage: int) -> None:
        """A trial that continues another from its checkpoint shows one learning curve: the
        other's values up to the checkpoint's step are copied in before it runs."""
        resumes = trial.user_attrs.get(RESUMES_ATTR)
        step = self.checkpoints.latest(lineage) if self.checkpoints is not None else None
        if resumes is not None and step is not None:
            kept = self.checkpoints.artifacts.checkpoints(lineage).curve(step)
            curve = self.recorder.copy_curve(int(resumes), trial, step, kept)
            if self.schedule is not None:
                self.schedule.resumed(trial.number, trial.user_attrs, curve)

    def _launch(self, run: _Running) -> None:
        launched_at = datetime.now()
        # Marked started before the call: a Ctrl-C or SIGTERM landing just after the backend
        # sent it (its worker already runs it) must find it started, so that it is handed back
        # and queued again, not left for nobody. A launch that fails never reached a worker.
        run.started = self.clock.monotonic()
        try:
            self.backend.launch(run.task)
        except Exception:
            run.started = None
            raise
        if run.started > run.asked:  # it waited for a slot: its run starts now, not at the ask
            self.recorder.started(run.trial, launched_at)

    def _count_running(self) -> None:
        self.counts.running = sum(run.started is not None for run in self._running.values())

    def _answer_reports(self, reports: list[Report]) -> None:
        decisions = []
        for key, step, value in reports:
            run = self._running.get(key)
            # A report from an attempt we no longer track (abandoned, or already told) is
            # dropped, and that worker is told to stop.
            stop = True if run is None else self.recorder.report(run.trial, step, value)
            if run is not None and not stop and self.schedule is not None and \
                    self.schedule.stops(run.trial.number, run.trial.user_attrs, step, value):
                stop = True  # the segment's end: its checkpoint is saved; the schedule goes on later
            decisions.append((key, step, stop))
        if self._decisions:  # the pruner read the reports from memory: answer first,
            self.backend.decide(decisions)
        if self.schedule is not None:
            self._enqueue_segments(self.schedule.reported())
        self._flush_due()  # then store them, with the others of the last flush_interval

    def _flush_due(self) -> None:
        """Write what is queued once every flush_interval. Reports of a running trial are all a
        flush can hold back: a driver that dies meanwhile loses only reports of trials that are
        re-run anyway, and a trial's start and its tell are written at once."""
        now = self.clock.monotonic()
        if now >= self._next_flush:
            self._next_flush = now + self.flush_interval
            self.recorder.flush()
            self.recorder.sync_outside()  # trials Optuna's tools added or told meanwhile

    def _note_began(self, keys: list[str]) -> None:
        now = self.clock.monotonic()
        for key in keys:
            run = self._running.get(key)
            if run is not None and run.started is not None and run.began is None:
                run.began = now

    def _stop_overdue(self) -> None:
        """Cancel trials running past trial_timeout and record them as failed.

        A trial's time counts from when its worker began it: a cold worker's start (placement,
        process start, imports, module-level data) is the worker's, paid once per worker and
        recorded as its start-up, not blamed on the trial. A worker that has not begun the trial
        ``worker_start_s`` (or trial_timeout, if longer) after its launch, an import that hangs,
        fails it all the same, saying so."""
        limit = self.spec.trial_timeout
        if limit is None:
            return
        start_limit = max(limit, self.worker_start_s)
        now = self.clock.monotonic()
        for key, run in list(self._running.items()):
            if run.started is None:
                continue
            if run.began is not None:
                if now - run.began <= limit:
                    continue
                error = f"trial exceeded trial_timeout of {limit:g} s"
            elif now - run.started > start_limit:
                error = (f"trial never began: its worker was still starting (placement, process start, imports, "
                         f"module-level data) {start_limit:g} s after the trial's launch")
            else:
                continue
            self.backend.cancel(key)
            self._collect(Finished(key, TrialOutcome(state="fail", error=error)))

    def _collect(self, finished: Finished) -> None:
        run = self._running.pop(finished.key, None)
        if run is None:  # an attempt this run no longer tracks
            return
        if run.started is not None:
            self.ask_ahead.ran(self.clock.monotonic() - run.started)
        self._count_running()
        self._record(run, finished)  # first: a launch that fails below cannot lose this result
        if run.started is not None:
            self._fill_freed_slot()
            self._count_running()

    def _fill_freed_slot(self) -> None:
        """The prepared trial takes the slot just freed, at once (the ask that the sampler takes
        is already done). Unless the study is stopping (e.g. the result just recorded reached the
        failure limit) or its timeout passed meanwhile: then it never starts, and is failed rather
        than left RUNNING."""
        prepared = next((r for r in self._running.values() if r.started is None), None)
        if prepared is None:
            return
        stopping = self._stop_reason is not None and self._stop_reason[0] != JobState.COMPLETED
        if not stopping and not self._past_deadline():
            self._launch(prepared)
            return
        self._running.pop(prepared.task.key)
        why = "the study is stopping" if stopping else "the study's timeout was reached"
        self.recorder.fail(id_of(prepared.trial), prepared.trial.number, f"not started: {why}",
                           {"attempt": prepared.attempt, "retried": False}, stopped=True)
        self.counts.stopped += 1

    def _record(self, run: _Running, finished: Finished) -> None:
        # An infrastructure failure (the worker process or its node died: killed, OOM, node
        # removed) is not the objective's fault, so the trial is retried with the same parameters.
        outcome, infrastructure = finished.outcome, finished.infrastructure
        info = {
            "owner": self.owner,
            "attempt": run.attempt,
            "node": outcome.node,
            "host": outcome.host,
            "device": outcome.device,
            "duration_s": round(outcome.duration, 4),
            "cpu_s": round(outcome.cpu_s, 4),
            "gpu_s": round(outcome.gpu_s, 4),
            "last_step": outcome.last_step,
            "metrics": outcome.metrics,
            "history": {str(k): v for k, v in sorted(outcome.history.items())},
            "pid": outcome.pid,
            "cold_start": outcome.cold,
        }
        if outcome.resumed_step is not None:  # steps it did not train again: they were checkpointed
            info["resumed_steps"] = outcome.resumed_step + 1
        if outcome.saved_step is not None:
            info["checkpoint_step"] = outcome.saved_step
        if run.started is not None:
            info["queued_s"] = round(run.started - run.asked, 4)  # asked, waiting for a free slot
            # the run starts when its worker started it (a backend may queue it past its launch);
            # never after now, whatever another node's clock says
            if outcome.started_at is not None and run.asked_at is not None:
                started_at = datetime.fromtimestamp(outcome.started_at)
                self.recorder.started(run.trial, min(max(started_at, run.asked_at), datetime.now()))
        if outcome.cold:
            info["startup_s"] = _rounded(outcome.startup_s)
            info["startup_cpu_s"] = _rounded(outcome.startup_cpu_s)
        if outcome.reports:
            self.recorder.store_missing_reports(run.trial, outcome.reports)
        scheduled = self.schedule is not None and self.schedule.owns(run.trial.user_attrs)
        segment_end = None
        if scheduled:
            info["trained_out"] = outcome.state == "complete"
            if outcome.state == "pruned":  # stopped by the schedule, or pruned
                segment_end = self.schedule.segment_end(run.trial.number, run.trial.user_attrs, outcome.last_step)
        segment_value = None if outcome.last_step is None else outcome.reports.get(outcome.last_step)
        if segment_end == "complete" and segment_value is not None:  # a PBT segment: its value at its end
            frozen = self.recorder.complete(run.trial, [segment_value], {}, info)
            if frozen is not None:
                self.counts.complete += 1
                self._update_best(frozen)
        elif segment_end == "paused":  # promotion: it may go on from its checkpoint later
            info["paused_at"] = outcome.last_step
            frozen = self.recorder.prune(run.trial, info)
            if frozen is not None:
                self.counts.pruned += 1
        elif outcome.state == "complete":
            frozen = self.recorder.complete(run.trial, outcome.values, outcome.constraints, info)
            if frozen is not None:
                self.counts.complete += 1
                self._update_best(frozen)
        elif outcome.state == "pruned":
            frozen = self.recorder.prune(run.trial, info)
            if frozen is not None:
                self.counts.pruned += 1
        elif finished.stopped:  # hpo lost it (its report channel died): queued again, using no retry
            frozen = self._hand_back(run, outcome.error or "stopped", info, goes_on=True)
        else:
            retried = infrastructure and self._retry(run.trial.user_attrs, run.params, run.attempt, run.trial.number)
            info["retried"] = retried
            frozen = self.recorder.fail(id_of(run.trial), run.trial.number, outcome.error or "failed", info)
            if frozen is not None:
                self._count_failure(outcome.error or "", retried)
        if frozen is None:
            self._count_finished_elsewhere(id_of(run.trial))
        elif scheduled:
            self._segment_finished(frozen, info)
        elif self.checkpoints is not None:
            self.checkpoints.ended(frozen, goes_on=bool(info.get("retried")))
        if frozen is not None:
            log.debug("trial %d %s after %.2f s (worker pid %s)", frozen.number, frozen.state.name.lower(),
                      outcome.duration, outcome.pid)
        if self.observer and frozen is not None:
            self.observer.trial_finished(frozen, self.counts, self.best)

    def _segment_finished(self, frozen: FrozenTrial, info: dict[str, Any]) -> None:
        queue = self.schedule.finished(frozen, info)
        if self.checkpoints is not None:
            self.checkpoints.ended(frozen, goes_on=self.schedule.goes_on(frozen, info))
        self._enqueue_segments(queue)

    def _enqueue_segments(self, queue: list[Enqueue]) -> None:
        for params, attrs, copy in queue:
            if copy is not None and self.checkpoints is not None:
                self.checkpoints.artifacts.copy_latest(*copy)  # exploit: the better member's model
            self.recorder.enqueue(params, attrs)

    def _count_finished_elsewhere(self, trial_id: int) -> None:
        """The trial was finished by someone else meanwhile (optuna-dashboard's "tell" on a
        running trial, or a new owner): its result was dropped, and the trial counts as what the
        store says it is, so the budget stays exact (a COMPLETE set by hand is not run again)."""
        state = self.recorder.state_of(trial_id)
        if state == TrialState.COMPLETE:
            self.counts.complete += 1
        elif state == TrialState.PRUNED:
            self.counts.pruned += 1
        elif state == TrialState.FAIL:
            self.counts.failed += 1

    def _retry(self, attrs: dict[str, Any], params: dict[str, Any], attempt: int, number: int,
               failed: bool = True) -> bool:
        """Enqueue another attempt (same parameters, same checkpoint folder: it resumes from the
        newest checkpoint) unless max_retries are used up. ``failed`` False: the trial was stopped
        (handed back, interrupted), which uses up no retry."""
        if failed and (attempt > self.spec.max_retries or not self.spec.retry_same_params):
            return False
        lineage = int(attrs.get(LINEAGE_ATTR, number))
        carried = {LINEAGE_ATTR: lineage, RESUMES_ATTR: number}
        if self.schedule is not None and self.schedule.owns(attrs):
            carried.update({k: v for k, v in attrs.items() if k in _SCHEDULE_ATTRS})
            self.schedule.requeued()
        self.recorder.retry(params, attempt + 1 if failed else attempt, number, carried)
        return True

    def _count_failure(self, error: str, retried: bool) -> None:
        self.counts.failed += 1
        if retried:
            return
        self._terminal_failures += 1
        if self._terminal_failures > self.spec.failure_limit:
            self._stop_reason = (
                JobState.FAILED,
                f"stopped after {self._terminal_failures} failed trials "
                f"(max_failed_trials={self.spec.failure_limit}); last error: {_last_line(error)}",
            )

    def _update_best(self, frozen: FrozenTrial) -> None:
        """Track the best feasible trial (single-objective studies; see Pareto front otherwise)."""
        if self.spec.is_multi_objective or any(v > 0 for v in frozen.constraints.values()):
            return
        value = frozen.value
        if value is None or not math.isfinite(value):
            return
        maximize = self.spec.study_directions[0] == "maximize"
        better = self.best is None or (value > self.best.value if maximize else value < self.best.value)
        if better:
            self.best = Best(number=frozen.number, value=value, params=dict(frozen.params))

    # -- recovery and shutdown --------------------------------------------------------------

    def _recover(self) -> None:
        """Fail (and retry) trials an earlier owner left RUNNING; count what earlier runs did.

        This driver owns the study now (it holds the job's lease), so a RUNNING trial that hpo
        started (it has an attempt row, written in the transaction that started it) belongs to
        an owner that died or was stopped: its worker's late result, if any, is dropped when
        that owner tries to tell it (the trial is already finished then). A RUNNING trial
        without one was started by Optuna's tools (`optuna ask`): it is left to its asker and
        counted when it finishes, as trials added during a run are. (On Optuna's own storage,
        where the row follows the start, every RUNNING trial is taken for hpo's.)
        """
        running = self.recorder.trials(states=(TrialState.RUNNING,))
        ours = self.recorder.started_here([t.number for t in running])  # None: cannot tell
        for frozen in running:
            if ours is not None and frozen.number not in ours:
                self.recorder.mark_outside(id_of(frozen))  # `optuna ask`: its asker's to tell
                continue
            attempt = int(frozen.user_attrs.get(ATTEMPT_ATTR, 1))
            retried = self._retry(frozen.user_attrs, frozen.params, attempt, frozen.number)
            reason = "its owner stopped before the trial finished (driver or serve died)"
            self.recorder.fail(id_of(frozen), frozen.number, reason, {"attempt": attempt, "retried": retried},
                               stopped=True)
        for frozen in self.recorder.trials():
            state = frozen.state
            if state == TrialState.COMPLETE:
                self.counts.complete += 1
                self._update_best(frozen)
            elif state == TrialState.PRUNED:
                self.counts.pruned += 1
            elif was_stopped(frozen):  # a hand-back or cancel is no failure of the objective
                self.counts.stopped += 1
            elif state == TrialState.FAIL:
                self.counts.failed += 1
                if not (frozen.user_attrs.get(INFO_ATTR) or {}).get("retried"):
                    self._terminal_failures += 1
        if self.checkpoints is not None:
            self.checkpoints.recover(self.recorder.trials())
        if self.schedule is not None:
            self._enqueue_segments(self.schedule.recover(self.recorder.trials()))

    def _count_outside(self) -> None:
        """Count the trials Optuna's tools added to the study (or finished) while it runs, as
        `_recover` counts those added before: towards the budget and the best, not towards the
        failure limit. They are found by the once-a-second sync and by inserts; before the
        dispatch that would use up the budget the database is looked at once more, so one that
        finished within that second is not run past."""
        n_trials = self.spec.n_trials
        if self.schedule is None and n_trials is not None and self.counts.finished + len(self._running) + 1 >= n_trials:
            self.recorder.sync_outside()
        for frozen in self.recorder.outside_finished():
            if frozen.state == TrialState.COMPLETE:
                self.counts.complete += 1
                self._update_best(frozen)
            elif frozen.state == TrialState.PRUNED:
                self.counts.pruned += 1
            else:
                self.counts.failed += 1
            if self.observer:
                self.observer.trial_finished(frozen, self.counts, self.best)

    def _fail_orphans(self) -> None:
        """A trial left RUNNING that this driver does not run (e.g. an ask whose reply was lost
        in a database outage and was retried) is failed, so nothing stays RUNNING. A trial asked
        from outside (`optuna ask`) is its asker's to tell, and is left alone."""
        for frozen in self.recorder.trials(states=(TrialState.RUNNING,)):
            if self.recorder.is_outside(id_of(frozen)):
                continue
            self.recorder.fail(id_of(frozen), frozen.number, "orphaned: never dispatched (store outage)",
                               stopped=True)

    def _fail_left_running(self, reason: str) -> None:
        """After a crash: a trial left RUNNING that no run tracks (an ask that crashed in the
        sampler) is failed too, so a study that ends FAILED keeps nothing RUNNING."""
        try:
            for frozen in self.recorder.trials(states=(TrialState.RUNNING,)):
                if not self.recorder.is_outside(id_of(frozen)):
                    self.recorder.fail(id_of(frozen), frozen.number, reason, stopped=True)
            self.recorder.flush()
        except Exception:  # the database may be what failed; the next owner cleans up
            pass

    def _abandon_running(self, reason: str | None) -> None:
        """Stop running trials; record them FAIL with ``reason`` unless it is None. A trial
        stopped so is queued again (same parameters) and resumes from its newest checkpoint
        when the study runs next (a resume, the next serve); it uses up no retry."""
        for key, run in list(self._running.items()):
            if run.started is not None:
                self.backend.cancel(key)
            if reason is None:
                continue
            try:
                # a prepared segment of a schedule is its lineage's next one: it is queued again too
                goes_on = run.started is not None or (self.schedule is not None
                                                      and self.schedule.owns(run.trial.user_attrs))
                self._hand_back(run, reason, {"attempt": run.attempt}, goes_on)
            except Exception:  # the database may be what failed; the next owner cleans up
                pass
        self._running.clear()
        self.counts.running = 0

    def _hand_back(self, run: _Running, reason: str, info: dict[str, Any], goes_on: bool) -> FrozenTrial | None:
        """Record a trial hpo stopped as FAIL (``hpo:stopped``, no failure of the objective) and,
        when it ``goes_on``, queue it again with the same parameters, using up no retry."""
        info["retried"] = goes_on and self._retry(run.trial.user_attrs, run.params, run.attempt, run.trial.number,
                                                  failed=False)
        frozen = self.recorder.fail(id_of(run.trial), run.trial.number, reason, info, stopped=True)
        if frozen is not None:
            self.counts.stopped += 1
        return frozen

    def _pareto(self) -> list[FrozenTrial]:
        if not self.spec.is_multi_objective:
            return []
        return list(self.recorder.best_trials())

    def _result(self) -> DriverResult:
        if self._stop_reason is not None:
            state, message = self._stop_reason
        else:
            state, message = JobState.COMPLETED, self.placement.note
            n_trials = self.spec.n_trials
            left = self.schedule.unfinished() if self.schedule is not None and self._past_deadline() else None
            if left is not None:
                message = f"timeout reached: {left}"
            elif self.schedule is None and n_trials is not None and self.counts.finished < n_trials:
                message = f"timeout reached after {self.counts.finished} of {n_trials} trials"
        return DriverResult(state=state, message=message, counts=self.counts, best=self.best)


def _schedule(spec: StudySpec, study_name: str) -> Schedule | None:
    """The study's schedule (PBT, or a pruner with promotion), if it has one."""
    maximize = spec.study_directions[0] == "maximize"
    if spec.pbt is not None:
        return PopulationBasedTraining(spec.pbt, spec.search_space, maximize,
                                       seed=trial_seed(spec, study_name, -1), bandit=spec.schedule.name == "pb2")
    if spec.promotion is not None:
        return PromotionSchedule(spec.promotion, spec.n_trials, maximize)
    return None


_SCHEDULE_ATTRS = (PBT_ATTR, PROMOTION_ATTR)  # what a retry of a segment carries


class LeaseLost(Exception):
    """Another owner took the study over; this driver must stop without writing more."""


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1][:300]
