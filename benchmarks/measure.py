"""How every system is measured, the same way: commands started from the shell as fresh processes,
their wall time, the machine's CPU time while they ran, and the objective's own log (benchlog).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (every process: Ray's daemons too):
    user + nice + system + irq + softirq of /proc/stat's aggregate line."""
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fh.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICK


def wait_until_quiet(*, busy_below: float = 0.15, window_s: float = 0.5, max_s: float = 30.0) -> float:
    """Wait until the machine is quiet: a ``window_s`` window in which all its CPUs together were
    busy less than ``busy_below`` of one CPU (what an earlier system left behind, such as a Ray
    runtime still shutting down, has finished). Gives up after ``max_s``; returns the seconds
    waited, so that a run can say how long it had to wait."""
    t0 = time.monotonic()
    while True:
        cpu0 = machine_cpu_s()
        time.sleep(window_s)
        if machine_cpu_s() - cpu0 < busy_below * window_s or time.monotonic() - t0 >= max_s:
            return time.monotonic() - t0


@dataclass
class Finished:
    started: float  # epoch seconds, just before the first process was started
    wall_s: float  # until the last process exited
    cpu_s: float  # machine CPU-seconds in between
    stdouts: list[str]
    stderrs: list[str]
    codes: list[int]
    setup_s: float = 0.0  # the ``first`` command's share of wall_s (e.g. `optuna create-study`)


class CommandFailed(RuntimeError):
    pass


def run_from_shell(commands: list[list[str]], *, env: dict[str, str], cwd: Path, timeout_s: float,
                   first: list[str] | None = None) -> Finished:
    """Start ``commands`` at once, each a fresh process (like a user's terminals), wait for all.

    ``first``: a command the user runs to its end before those (`optuna create-study`); its time
    and CPU are the run's too (``setup_s`` says how much). A command that fails, or outlives
    ``timeout_s``, stops the others (their whole process groups) and raises CommandFailed with the
    end of its stderr.
    """
    outs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in commands]
    procs: list[subprocess.Popen] = []
    cpu0, started, t0 = machine_cpu_s(), time.time(), time.monotonic()
    setup_s = 0.0
    if first is not None:
        try:
            done = subprocess.run(first, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{' '.join(first)}: still running after {timeout_s:.0f} s") from None
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-25:])
            raise CommandFailed(f"{' '.join(first)} exited with {done.returncode}:\n{tail}")
        setup_s = time.monotonic() - t0
    try:
        for cmd, (out, err) in zip(commands, outs):
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True))
        for proc in procs:
            proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
        wall, cpu = time.monotonic() - t0, machine_cpu_s() - cpu0
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{' '.join(commands[0])}: still running after {timeout_s:.0f} s") from None
    finally:
        for proc in procs:  # whatever is left of each command's process group (none, normally)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    texts = []
    for out, err in outs:
        out.seek(0), err.seek(0)
        texts.append((out.read(), err.read()))
        out.close(), err.close()
    codes = [p.returncode for p in procs]
    for cmd, code, (_, err) in zip(commands, codes, texts):
        if code != 0:
            tail = "\n".join(err.strip().splitlines()[-25:])
            raise CommandFailed(f"{' '.join(cmd)} exited with {code}:\n{tail}")
    return Finished(started, wall, cpu, [o for o, _ in texts], [e for _, e in texts], codes, setup_s)


@dataclass
class BenchLog:
    loaded: set[int] = field(default_factory=set)  # processes that imported the objective module
    workers: set[int] = field(default_factory=set)  # processes that ran trials (reported)
    report_ms: list[float] = field(default_factory=list)
    first_call: float | None = None  # epoch s when an objective first started
    last_report: float | None = None  # epoch s when the last report returned
    # The wall split into what the search chose to train and what the system adds per trial:
    objective_s: float = 0.0  # summed over trials: from the objective's start to its last report's return
    between_ms: list[float] = field(default_factory=list)  # per process: one trial's last report to the next's start
    # each step trained, for objectives that log their work (benchlog.timed(reporter, **work)):
    # (seconds from the previous report's return, or the call, to this report's start; whether it
    # is the process's first step, which pays torch's warm-up; the trial's work per step)
    steps: list[tuple[float, bool, dict[str, float]]] = field(default_factory=list)


def read_log(path: Path) -> BenchLog:
    log = BenchLog()
    if not path.exists():
        return log
    # per process, (epoch s, "call" | "report", the call's work | the report's wait in s)
    events: dict[int, list[tuple[float, str, dict[str, float] | float]]] = {}
    for line in path.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "pid":
            log.loaded.add(int(rest[0]))
        elif kind == "call":
            at = float(rest[1])
            log.first_call = at if log.first_call is None else min(log.first_call, at)
            work = {name: float(value) for name, _, value in (item.partition("=") for item in rest[2:])}
            events.setdefault(int(rest[0]), []).append((at, kind, work))
        elif kind == "report":
            log.workers.add(int(rest[0]))
            log.report_ms.append(float(rest[1]))
            at = float(rest[2])
            log.last_report = at if log.last_report is None else max(log.last_report, at)
            events.setdefault(int(rest[0]), []).append((at, kind, float(rest[1]) / 1000))
    for timeline in events.values():  # a process runs one trial at a time
        started = ended = work = None
        first = True
        for at, kind, payload in sorted(timeline, key=lambda event: event[0]):
            if kind == "call":
                if started is not None and ended is not None:
                    log.objective_s += ended - started
                    log.between_ms.append(1000 * (at - ended))
                started, ended, work = at, None, payload
            else:
                if work:
                    log.steps.append((at - payload - (ended or started), first, work))
                ended, first = at, False
        if started is not None and ended is not None:
            log.objective_s += ended - started
    return log
