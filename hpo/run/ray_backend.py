"""Trials on Ray: long-lived worker actors (one per slot) and the process's report channel.

A trial is a call to a worker actor that keeps its process from one trial to the next, so
imports, datasets built at module level and torch's warm-up are paid once per worker, not once
per trial (Ray's task workers are killed when idle and restarted cold). Workers are pooled per
process by their ``Slot`` (objective, import path, module file version, resources): a study
reuses the workers of an earlier study only when they would run the same code with the same
resources, and two studies whose modules share a name never share a worker.

Idle workers hold their CPUs and GPUs in Ray, so none is kept idle while another kind of
worker is wanted: a study run returns the workers it does not relaunch when it has nothing more
to launch (``release_spare``), and the pool ends idle workers as soon as a study of another kind
is running or a worker it asked for waits to be placed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from hpo.defaults import WORKER_START_S
from hpo.errors import HpoError
from hpo.run.backend import Decision, Events, Finished, Slot, TrialBackend
from hpo.run.driver import Placement, trial_slot
from hpo.run.ray_runtime import cluster_capacity
from hpo.run.submission import apply_objective_check
from hpo.spec.study import StudySpec
from workers.channel import process_channel
from workers.runner import ChannelLost, TrialOutcome, TrialTask
from workers.worker import TrialWorker

_Worker = ray.remote(max_restarts=0, max_task_retries=0)(TrialWorker)
log = logging.getLogger("hpo.run.ray_backend")


class WorkerPool:
    """Idle workers of this process by slot, shared by every study the process drives.

    It also knows every worker it started that is still alive, busy or idle, and what they hold:
    an idle worker is ended rather than kept whenever workers this process asked for exceed the
    cluster (one is waiting to be placed), or a study of another kind is running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: tuple | None = None
        self._idle: dict[Slot, list[tuple[Any, float]]] = {}
        self._live: dict[Any, Slot] = {}  # every worker started and not ended, busy or idle
        self._active: dict[Slot, int] = {}  # open study runs per slot
        self._capacity = (0.0, 0.0)

    def _check_connection(self) -> None:
        """Handles of an earlier Ray runtime (shut down since) are dropped."""
        ctx = ray.get_runtime_context()
        key = (ctx.gcs_address, ctx.get_job_id())
        if key != self._connection:
            self._connection, self._idle, self._live, self._active = key, {}, {}, {}

    def register(self, slot: Slot) -> None:
        capacity = cluster_capacity()
        with self._lock:
            self._check_connection()
            self._capacity = capacity
            self._active[slot] = self._active.get(slot, 0) + 1
            for other in [s for s in self._idle if s != slot]:  # nobody runs them now
                for worker, _ in self._idle.pop(other):
                    self._end(worker)

    def unregister(self, slot: Slot, keep_idle_s: float) -> None:
        with self._lock:
            self._active[slot] = self._active.get(slot, 1) - 1
            if self._active[slot] <= 0:
                del self._active[slot]
            self._reap(keep_idle_s)

    def acquire(self, slot: Slot) -> Any:
        with self._lock:
            if slot in self._idle:
                return self._take_idle(slot)
            # Idle workers of other kinds hold what no trial uses now: end them to make room.
            while self._exceeds(slot) and self._idle:
                self._end(self._take_idle(next(iter(self._idle))))
            options: dict[str, Any] = {"num_cpus": slot.cpu, "num_gpus": slot.gpu}
            if slot.memory:
                options["memory"] = slot.memory
            worker = _Worker.options(**options).remote(slot.objective, slot.import_path)
            self._live[worker] = slot
            return worker

    def release(self, slot: Slot, worker: Any) -> None:
        """Keep an idle worker for the next trial of its kind, unless a worker waits to be placed
        or another kind is running (the idle one holds what they may be waiting for)."""
        with self._lock:
            if self._exceeds(None) or any(other != slot for other in self._active):
                self._end(worker)
            else:
                self._idle.setdefault(slot, []).append((worker, time.monotonic()))

    def discard(self, worker: Any) -> None:
        """End a worker that is dead or must stop mid-trial."""
        with self._lock:
            self._end(worker)

    def reap(self, keep_idle_s: float) -> None:
        with self._lock:
            self._check_connection()
            self._reap(keep_idle_s)

    def idle(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def _take_idle(self, slot: Slot) -> Any:
        """An idle worker of ``slot`` (there is one: no slot is kept with an empty list)."""
        worker = self._idle[slot].pop()[0]
        if not self._idle[slot]:
            del self._idle[slot]
        return worker

    def _exceeds(self, extra: Slot | None) -> bool:
        """Whether the live workers (plus ``extra``) ask for more than the cluster has."""
        slots = [*self._live.values(), *([extra] if extra else [])]
        cpus, gpus = self._capacity
        return sum(s.cpu for s in slots) > cpus + 1e-9 or sum(s.gpu for s in slots) > gpus + 1e-9

    def _end(self, worker: Any) -> None:
        self._live.pop(worker, None)
        ray.kill(worker, no_restart=True)

    def _reap(self, keep_idle_s: float) -> None:
        cutoff = time.monotonic() - keep_idle_s
        for slot in [s for s in self._idle if s not in self._active]:
            for worker, since in self._idle[slot]:
                if since <= cutoff:
                    self._end(worker)
            self._idle[slot] = [(w, t) for w, t in self._idle[slot] if t > cutoff]
            if not self._idle[slot]:
                del self._idle[slot]


POOL = WorkerPool()


def prepare_workers(spec: StudySpec, placement: Placement, *, keep_s: float = 60.0, timeout_s: float = WORKER_START_S) -> None:
    """Start a study's workers before its first trial and check its objective in the first one
    ready: the objective is imported where it runs (not in the driver too), while the others
    import it in parallel. Raises HpoError when the objective cannot be imported or refuses its
    args, or when no worker started within ``timeout_s`` (the cluster cannot place one); the
    workers are ended then. Otherwise they wait idle (up to ``keep_s``) for the first trials."""
    slot = trial_slot(spec, placement)
    POOL.register(slot)
    workers = [POOL.acquire(slot) for _ in range(placement.concurrency)]
    result: tuple | None = None
    try:
        calls = [worker.check.remote(spec.objective_args) for worker in workers]
        ready, _ = ray.wait(calls, num_returns=1, timeout=timeout_s)
        if not ready:
            raise HpoError(f"no Ray worker with {_asks(slot)} started within {timeout_s:g} s; "
                           "the cluster has no room for one")
        result = ray.get(ready[0])
    except ray.exceptions.RayError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise HpoError(f"objective {spec.objective!r} cannot be checked: a Ray worker failed: "
                       f"{type(exc).__name__}: {first}") from None
    finally:
        ok = result is not None and result[0] is None
        for worker in workers:
            POOL.release(slot, worker) if ok else POOL.discard(worker)
        POOL.unregister(slot, keep_s)
    apply_objective_check(spec, *result)


def _asks(slot: Slot) -> str:
    asks = [f"cpu: {slot.cpu:g}"] + ([f"gpu: {slot.gpu:g}"] if slot.gpu else [])
    return ", ".join(asks + ([f"memory: {slot.memory} bytes"] if slot.memory else []))


class RayBackend(TrialBackend):
    """One study run's trials on the process's worker pool.

    ``keep_idle_s``: how long the run's workers stay for a next study of the same kind once it
    ends (``hpo serve`` keeps them a minute; a single ``hpo run`` needs none).
    """

    def __init__(self, *, poll_interval: float = 1.0, keep_idle_s: float = 0.0, pool: WorkerPool = POOL) -> None:
        self.poll_interval = poll_interval
        self.keep_idle_s = keep_idle_s
        self.pool = pool
        self._busy: dict[ray.ObjectRef, tuple[str, Any]] = {}  # call -> (attempt key, worker)
        self._by_key: dict[str, ray.ObjectRef] = {}
        self._free: list[Any] = []  # workers whose trial just ended, for the driver's next launch
        self._channel: Any = None
        self._registered = False

    def capacity(self) -> tuple[float, float]:
        return cluster_capacity()

    def open(self, box: str, slot: Slot) -> None:
        self._box, self._slot = box, slot
        self._channel = process_channel()
        self.pool.register(slot)
        self._registered = True
        self._take = self._channel.take.remote(box, self.poll_interval)

    def launch(self, task: TrialTask) -> None:
        worker = self._free.pop() if self._free else self.pool.acquire(self._slot)
        ref = worker.run.remote(task, self._channel)
        self._busy[ref] = (task.key, worker)
        self._by_key[task.key] = ref

    def release_spare(self) -> None:
        while self._free:
            self.pool.release(self._slot, self._free.pop())

    def poll(self, timeout: float) -> Events:
        calls = [*self._busy, self._take]
        ready, _ = ray.wait(calls, num_returns=1, timeout=timeout)
        if ready:  # everything else that is ready too, in one go
            ready, _ = ray.wait(calls, num_returns=len(calls), timeout=0)
        events = Events()
        for ref in ready:
            if ref == self._take:
                try:
                    reports, began = ray.get(ref)
                    events.reports.extend(reports)
                    events.began.extend(began)
                except ray.exceptions.RayActorError as exc:
                    self._channel_died(exc, events)
                self._take = self._channel.take.remote(self._box, self.poll_interval)
            else:
                events.finished.append(self._finished(ref))
        return events

    def _channel_died(self, exc: Exception, events: Events) -> None:
        """The process's report channel died (killed, out of memory): this run goes on with a new
        one. Its running trials stop at their next report (ChannelLost) and are handed back. A
        notice that one of them began may have died with the channel: each counts as begun now,
        so that its trial_timeout still applies."""
        log.warning("the report channel died (%s); going on with a new one", type(exc).__name__)
        self._channel = process_channel()
        events.began.extend(key for key, _ in self._busy.values())

    def _finished(self, ref: ray.ObjectRef) -> Finished:
        key, worker = self._busy.pop(ref)
        self._by_key.pop(key, None)
        try:
            outcome: TrialOutcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, ChannelLost):
                self._free.append(worker)  # the worker is fine; only the channel it reported to died
                return Finished(key, TrialOutcome(state="fail", error=f"ChannelLost: {exc.cause}"), stopped=True)
            # The worker process or its node died (killed, OOM, node removed): not the
            # objective's fault. The pool replaces the worker at the next launch.
            self.pool.discard(worker)
            first = (str(exc).strip().splitlines() or [""])[0][:500]
            return Finished(key, TrialOutcome(state="fail", error=f"{type(exc).__name__}: {first}"), True)
        self._free.append(worker)
        return Finished(key, outcome)

    def decide(self, decisions: list[Decision]) -> None:
        self._channel.decide.remote(self._box, decisions)

    def cancel(self, key: str) -> None:
        """A running call cannot be interrupted in a worker that keeps state: end the worker."""
        ref = self._by_key.pop(key, None)
        if ref is not None:
            _, worker = self._busy.pop(ref)
            self.pool.discard(worker)

    def close(self) -> None:
        try:
            if self._channel is not None:
                self._channel.close.remote(self._box)  # workers still reporting to it are told to stop
            for key in list(self._by_key):
                self.cancel(key)
            self.release_spare()
        finally:
            if self._registered:
                self._registered = False
                self.pool.unregister(self._slot, self.keep_idle_s)
