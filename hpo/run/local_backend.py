"""Trials in worker processes of this machine, without Ray: the backend of a single-machine
`hpo run`.

A cold local Ray runtime costs a study about 4-5 s and 7 CPU-s to start and 1.5 s to stop, and
every Ray worker imports Ray before the objective; for a study that fits one machine none of it
buys anything. This backend starts one plain Python process per slot
(``workers.local_worker``), each running trial after trial of the study's objective exactly as a
Ray worker actor does (imports and module-level data paid once per process), and talks to it
over a socket pair: a report reaches the driver and its prune decision comes back in well under
a millisecond.

What it does not do: GPUs (a study that asks for them runs on Ray, which places fractional
GPUs) and other machines (``--ray-address``). Worker processes get the driver's environment
without database credentials, and no GPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from hpo.defaults import WORKER_START_S
from hpo.errors import HpoError
from hpo.run.backend import Decision, Events, Finished, Slot, TrialBackend
from workers.credentials import scrubbed_environment
from workers.runner import LOCAL_NODE_VAR, TrialOutcome, TrialTask

_STOP_WAIT_S = 2.0  # how long a worker told to stop may take before it is killed


@dataclass(eq=False)
class _Process:
    proc: subprocess.Popen
    conn: Connection
    key: str | None = None  # the attempt it runs; None while idle


class LocalBackend(TrialBackend):
    """One study run's trials on worker processes of this machine.

    ``cpus``: what the machine gives trials (default: every CPU this process may use).
    ``start`` may be called before ``open`` (``hpo run`` starts the workers first, so their
    imports overlap the driver's own start-up); ``close`` ends every worker.
    """

    where = "this machine"

    def __init__(self, *, cpus: float | None = None, poll_interval: float = 1.0) -> None:
        self.cpus = float(cpus or len(os.sched_getaffinity(0)) or 1)
        self.poll_interval = poll_interval
        self._slot: Slot | None = None
        self._workers: list[_Process] = []
        self._by_key: dict[str, _Process] = {}
        self._env: dict[str, str] | None = None

    # -- starting -----------------------------------------------------------------------------

    def capacity(self) -> tuple[float, float]:
        return self.cpus, 0.0

    def start(self, slot: Slot, count: int) -> None:
        """Start ``count`` workers for ``slot`` now (workers of another slot are ended)."""
        if slot.gpu > 0:
            raise HpoError("the local backend runs no GPU trials; run the study on Ray (--backend ray)")
        if self._slot != slot:
            self._end_all()
            self._slot, self._env = slot, None
        while len(self._workers) < count:
            self._workers.append(self._spawn(slot))

    def check(self, args: dict, timeout_s: float = WORKER_START_S) -> tuple[str | None, dict]:
        """Import the objective in the workers (each pays that once anyway) and check its args
        in the first one ready: (None, checked args) or (one line saying what is wrong, args)."""
        idle = [w for w in self._workers if w.key is None]
        for worker in idle:  # a worker answers in order: a trial sent meanwhile runs after its check
            self._send(worker, ("check", args))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = wait([w.conn for w in idle], timeout=max(0.0, deadline - time.monotonic()))
            for worker in [w for w in idle if w.conn in ready]:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    return f"objective {self._slot.objective!r} cannot be checked: {self._death(worker)}", args
                if message[0] == "checked":
                    return message[1]
        raise HpoError(f"no local worker imported the objective within {timeout_s:g} s")

    def open(self, box: str, slot: Slot) -> None:
        self.start(slot, 0)

    def _spawn(self, slot: Slot) -> _Process:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-P", "-m", "workers.local_worker", str(theirs.fileno()), slot.objective,
                slot.import_path or ""]
        try:
            # What a trial prints goes to the driver's stderr: its stdout may be `--json`.
            proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], env=self._environment(slot),
                                    stdin=subprocess.DEVNULL, stdout=2)
        finally:
            theirs.close()
        return _Process(proc, Connection(ours.detach()))

    def _environment(self, slot: Slot) -> dict[str, str]:
        if self._env is None:
            env = scrubbed_environment(os.environ)
            env[LOCAL_NODE_VAR] = socket.gethostname()
            env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU for a trial that did not ask for one
            env["OMP_NUM_THREADS"] = str(max(1, int(slot.cpu)))  # before torch loads, as Ray does
            self._env = env
        return self._env

    # -- running ------------------------------------------------------------------------------

    def launch(self, task: TrialTask) -> None:
        assert self._slot is not None, "open() first"
        worker = next((w for w in self._workers if w.key is None), None)
        if worker is None:
            worker = self._spawn(self._slot)
            self._workers.append(worker)
        worker.key = task.key
        self._by_key[task.key] = worker
        self._send(worker, ("run", task))  # a worker that died meanwhile shows at the next poll

    def poll(self, timeout: float) -> Events:
        events = Events()
        conns = [w.conn for w in self._workers]
        if not conns:
            time.sleep(timeout)
            return events
        ready = wait(conns, timeout=timeout)
        for worker in [w for w in self._workers if w.conn in ready]:
            self._read(worker, events)
        return events

    def _read(self, worker: _Process, events: Events) -> None:
        try:
            while worker.conn.poll(0):
                message = worker.conn.recv()
                kind = message[0]
                if kind == "report":
                    events.reports.append((message[1], message[2], message[3]))
                elif kind == "began":
                    events.began.append(message[1])
                elif kind == "done":
                    self._by_key.pop(message[1], None)
                    worker.key = None
                    events.finished.append(Finished(message[1], message[2]))
                # "checked": the answer of a worker whose check nobody waited for
        except (EOFError, OSError):
            # The process died (killed, out of memory): not the objective's fault. The next
            # launch starts a new one.
            reason = self._death(worker)
            if worker.key is not None:
                self._by_key.pop(worker.key, None)
                events.finished.append(Finished(worker.key, TrialOutcome(state="fail", error=reason), True))

    def decide(self, decisions: list[Decision]) -> None:
        for key, step, stop in decisions:
            worker = self._by_key.get(key)
            if worker is not None:
                self._send(worker, ("decision", step, stop))

    def cancel(self, key: str) -> None:
        """A running trial cannot be interrupted in a process that keeps state: end the process."""
        worker = self._by_key.pop(key, None)
        if worker is not None:
            self._kill(worker)

    def close(self) -> None:
        self._end_all()

    # -- processes ----------------------------------------------------------------------------

    def workers(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [w.proc.pid for w in self._workers]

    def _send(self, worker: _Process, message: tuple) -> bool:
        try:
            worker.conn.send(message)
            return True
        except OSError:
            return False  # it died; its end shows at the next poll

    def _death(self, worker: _Process) -> str:
        """Forget a dead worker; one line on how it ended."""
        self._forget(worker)
        try:
            code = worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            code = worker.proc.wait()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return f"WorkerDied: worker process {worker.proc.pid} was killed by {name}{hint}"
        return f"WorkerDied: worker process {worker.proc.pid} exited with code {code}"

    def _forget(self, worker: _Process) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        worker.conn.close()

    def _kill(self, worker: _Process) -> None:
        self._forget(worker)
        worker.proc.kill()
        worker.proc.wait()

    def _end_all(self) -> None:
        """Idle workers are told to stop (they exit at once); busy ones are killed."""
        workers, self._workers = self._workers, []
        self._by_key.clear()
        for worker in workers:
            if worker.key is None and self._send(worker, ("stop",)):
                worker.conn.close()
            else:
                worker.conn.close()
                worker.proc.kill()
        deadline = time.monotonic() + _STOP_WAIT_S
        for worker in workers:
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
