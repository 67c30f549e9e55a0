"""`hpo serve`: claim queued studies from the store and run several at once on one Ray cluster.

Each claimed study runs in its own thread with its own StudyDriver (the sole owner of that study
while its lease is renewed). The cluster's CPUs and GPUs are shared evenly between the studies
running at once. Stopping (SIGTERM/SIGINT) takes no new work, hands running trials back and
releases every lease, so another serve (or this one, restarted) resumes the studies.
"""

from __future__ import annotations

import fcntl
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from hpo.defaults import HEARTBEAT_S, KEEP_IDLE_WORKERS_S, LEASE_S, MAX_STUDIES, POLL_S
from hpo.errors import HpoError, RuntimeLost, StudyMissing
from hpo.run.driver import LeaseLost, plan_placement
from hpo.run.execution import run_job
from hpo.run.ray_backend import POOL, RayBackend
from hpo.run.ray_runtime import cluster_capacity
from hpo.run.submission import check_objective
from hpo.spec.study import StudySpec
from hpo.store.database import Store
from hpo.store.jobs import Job, Jobs, JobState, default_owner

log = logging.getLogger("hpo.serve")



class FairShare:
    """Splits the cluster's CPUs and GPUs evenly between the studies running at once.

    Every study keeps at least one trial (one worker) going, so no more studies run at once than
    the cluster holds one trial of each: a study beyond that would wait for a worker that the
    others, each at its one slot, never give up.
    """

    def __init__(self, capacity: Callable[[], tuple[float, float]] = cluster_capacity) -> None:
        self._active: dict[str, tuple[float, float]] = {}  # study -> (cpu, gpu) of one trial
        self._lock = threading.Lock()
        self._capacity = capacity

    def add(self, name: str, cpu: float, gpu: float) -> None:
        with self._lock:
            self._active[name] = (cpu, gpu)

    def remove(self, name: str) -> None:
        with self._lock:
            self._active.pop(name, None)

    def has_room(self) -> bool:
        """Whether one trial of each running study leaves part of the cluster free."""
        cpus, gpus = self._capacity()
        with self._lock:
            cpu = sum(c for c, _ in self._active.values())
            gpu = sum(g for _, g in self._active.values())
        return cpu < cpus - 1e-9 and gpu <= gpus + 1e-9

    def cap(self, spec: StudySpec) -> int:
        """Trials this study may have in flight now (at least one)."""
        cpus, gpus = self._capacity()
        with self._lock:
            n = max(1, len(self._active))
        fits = int((cpus / n) // spec.resources.cpu)
        if spec.resources.gpu > 0 and gpus > 0:
            fits = min(fits, int((gpus / n) // spec.resources.gpu))
        return max(1, fits)


class Server:
    def __init__(
        self,
        store: Store,
        *,
        max_studies: int = MAX_STUDIES,
        poll_s: float = POLL_S,
        lease_s: float = LEASE_S,
        heartbeat_s: float = HEARTBEAT_S,
        owner: str | None = None,
        crash_backoff_s: float | None = None,
        capacity: Callable[[], tuple[float, float]] = cluster_capacity,
    ) -> None:
        self.store = store
        self._capacity = capacity
        self._empty_polls = 0  # polls in a row that saw no live CPU in the cluster
        self.crash_backoff_s = crash_backoff_s  # None: hpo.store.jobs.CRASH_BACKOFF_S
        self.jobs = Jobs(store.engine)
        self.max_studies = max_studies
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.heartbeat_s = min(heartbeat_s, lease_s / 3)
        self.owner = owner or default_owner()
        self.share = FairShare(capacity)
        self.stopping = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._lock_file = None

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; then hand every running study back."""
        self.exclusive_sqlite()
        self.store.upgrade()
        log.info("serving %s as %s", self.store.masked, self.owner)
        backoff = self.poll_s
        lost = False
        while not stop.is_set():
            if self._runtime_gone():
                log.error("the Ray runtime has no live node with CPUs: handing every study back")
                lost = True
                break
            self._reap()
            POOL.reap(KEEP_IDLE_WORKERS_S)
            try:
                self.claim_more(stop)
                backoff = self.poll_s
            except SQLAlchemyError as exc:
                log.warning("store unavailable (%s); retrying in %.1f s", self.store.scrub(exc), backoff)
                backoff = min(backoff * 2, 30.0)
            stop.wait(backoff)
        log.info("stopping: handing %d running studies back", len(self._threads))
        self.stopping.set()
        for thread in list(self._threads.values()):
            thread.join()
        self._reap()
        if lost:
            raise RuntimeLost("the Ray runtime this serve runs on is gone (no live node with CPUs); its studies "
                              "were handed back and resume on the next serve: restart hpo serve")

    def claim_more(self, stop: threading.Event) -> None:
        """Claim queued (or abandoned) studies while there is room, never one this serve runs
        already: its own lease can lapse under load before the driver's first renewal."""
        while len(self._threads) < self.max_studies and self.share.has_room() and not stop.is_set():
            job = self.jobs.claim_next(self.owner, self.lease_s, skip=set(self._threads))
            if job is None:
                break
            self._start(job)

    def _runtime_gone(self) -> bool:
        """Two polls in a row with no CPU in the cluster (its raylet died, its nodes were lost):
        an infrastructure failure, not a reason to fail the studies."""
        self._empty_polls = self._empty_polls + 1 if self._no_live_cpu() else 0
        return self._empty_polls >= 2

    def _no_live_cpu(self) -> bool:
        try:
            return self._capacity()[0] <= 0
        except Exception:  # noqa: BLE001 (Ray raises many kinds when its runtime is gone)
            return True

    def _start(self, job: Job) -> None:
        try:  # its one trial is reserved at once, before the next claim
            resources = StudySpec.from_json(job.spec).resources
            self.share.add(job.study_name, resources.cpu, resources.gpu)
        except Exception:  # the study's thread refuses the spec with its error
            self.share.add(job.study_name, 1.0, 0.0)
        thread = threading.Thread(target=self._run_study, args=(job,), name=f"study-{job.study_name}", daemon=True)
        self._threads[job.study_name] = thread
        thread.start()

    def _reap(self) -> None:
        for name, thread in list(self._threads.items()):
            if not thread.is_alive():
                del self._threads[name]

    def _run_study(self, job: Job) -> None:
        try:
            self._drive(job)
        finally:
            self.share.remove(job.study_name)

    def _drive(self, job: Job) -> None:
        name = job.study_name
        try:
            if not self.store.has_study(name):  # deleted outside hpo while it was queued
                raise StudyMissing(name)
            spec = StudySpec.from_json(job.spec)
            check_objective(spec)
            plan_placement(spec)
        except HpoError as exc:
            if self._no_live_cpu():  # the cluster, not the spec, is what failed
                log.error("study %s handed back: the Ray runtime has no live node", name)
                self.jobs.finish(name, self.owner, JobState.INTERRUPTED, "handed back: the Ray runtime has no live node")
                return
            log.error("study %s cannot run: %s", name, exc)
            self.jobs.finish(name, self.owner, JobState.FAILED, str(exc))
            return
        log.info("running study %s", name)
        try:
            run_job(  # the driver logs how the study ended
                self.store, spec, self.owner, stop=self.stopping,
                concurrency_cap=lambda: self.share.cap(spec),
                lease_s=self.lease_s, heartbeat_s=self.heartbeat_s,
                backend=RayBackend(keep_idle_s=KEEP_IDLE_WORKERS_S), crash_backoff_s=self.crash_backoff_s,
            )
        except LeaseLost:
            log.warning("study %s was taken over by another owner", name)
        except Exception as exc:  # keep serving the other studies
            log.error("study %s stopped: %s: %s", name, type(exc).__name__, self.store.scrub(exc))

    def exclusive_sqlite(self) -> None:
        """SQLite has no row locks to share a queue safely: one serve per database file (an OS
        lock next to it, held until this process ends). Idempotent."""
        path: Path | None = self.store.sqlite_path
        if path is None or self._lock_file is not None:
            return
        lock_path = path.with_name(path.name + ".serve-lock")
        self._lock_file = open(lock_path, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise HpoError(
                f"another hpo serve ({holder}) already serves {self.store.masked}; "
                "SQLite allows one serve per file (use PostgreSQL for several replicas)"
            ) from None
        self._lock_file.truncate(0)
        self._lock_file.write(self.owner)
        self._lock_file.flush()



def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` (graceful: trials handed back); a second one exits at once."""

    def handler(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
