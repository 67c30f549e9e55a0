"""A local worker process: the local backend's counterpart of the Ray worker actor.

Started by ``hpo.run.local_backend`` as ``python -P -m workers.local_worker FD OBJECTIVE [IMPORT_PATH]``
with one end of a socket pair as file descriptor FD. It runs trial after trial of one objective
(a ``TrialWorker``, as a Ray actor would), so imports and module-level data are paid once per
process. It never imports Ray and never sees the database.

Messages (pickled, over the socket):
  driver -> worker: ("check", args) | ("run", task) | ("decision", step, stop) | ("stop",)
  worker -> driver: ("checked", (error, args)) | ("began", key) | ("report", key, step, value)
                    | ("done", key, outcome)

The process ends when told to stop, when the driver closes its end, and (on Linux) at once when
the driver process dies, so a killed driver leaves no trial training on. It ends the way
multiprocessing's children and Ray's workers do, with ``os._exit`` once its output is flushed:
an idle worker holds nothing to save, and tearing down an interpreter with torch loaded costs
about half a second that the driver would wait for (an objective's ``atexit`` hooks do not run:
close what a trial opens within the trial).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from multiprocessing.connection import Connection

from workers.runner import TrialTask, run_trial
from workers.worker import TrialWorker


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the process that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the closed socket still ends the process at its next message


def _sender(conn: Connection, task: TrialTask):
    """``send(step, value)`` for the trial's reporter: the report goes to the driver; with prune
    decisions the trial waits for the answer to this step."""

    def send(step: int, value: float) -> bool:
        conn.send(("report", task.key, step, value))
        if task.decisions:
            while True:
                message = conn.recv()
                if message[0] == "stop":
                    return True
                if message[0] == "decision" and message[1] == step:
                    return bool(message[2])
        stop = False
        while conn.poll(0):  # nothing waits for an answer; a stop may have come meanwhile
            stop = stop or conn.recv()[0] == "stop"
        return stop

    return send


def serve(conn: Connection, objective: str, import_path: str | None) -> None:
    worker = TrialWorker(objective, import_path)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the driver is gone
        kind = message[0]
        if kind == "stop":
            return
        if kind == "check":
            conn.send(("checked", worker.check(message[1])))
        elif kind == "run":
            task: TrialTask = message[1]
            outcome = worker.execute(task, lambda t: run_trial(t, _sender(conn, t)),
                                     began=lambda: conn.send(("began", task.key)))
            conn.send(("done", task.key, outcome))
        # a late decision for a trial that already ended is dropped


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    fd, objective = int(args[0]), args[1]
    import_path = args[2] if len(args) > 2 and args[2] else None
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it hands the trials back
    conn = Connection(fd)
    try:
        serve(conn, objective, import_path)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the driver went away mid-trial
    finally:
        conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
