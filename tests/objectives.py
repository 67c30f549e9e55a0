"""Cheap objectives for tests: analytic functions with a multi-step learning curve."""

from __future__ import annotations

import math
import time
from pathlib import Path


def _wait_until(condition, timeout: float = 60.0) -> None:
    """Until ``condition()`` holds or ``timeout`` seconds pass (the test then fails on what it
    checks): how trials here wait for each other, or for a test's step, on files."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def curve(params, reporter, steps: int = 6, delay: float = 0.0, gate: str | None = None, gate_from: int = 0):
    """A quadratic bowl approached along a learning curve; minimize. Reports every step. With
    ``gate`` (a file), trials numbered ``gate_from`` or more wait (up to 60 s) until it exists."""
    if gate and reporter.trial_number >= gate_from:
        _wait_until(Path(gate).exists)
    target = (params["x"] - 0.3) ** 2 + (params.get("y", 0.0) + 0.1) ** 2
    value = target
    for step in range(steps):
        value = target + 1.0 / (step + 1)
        if delay:
            time.sleep(delay)
        reporter.report(step, value)
    return value


def fails_when_x_large(params, reporter):
    reporter.report(0, params["x"])
    if params["x"] > 0.5:
        raise RuntimeError(f"x too large: {params['x']:.3f}")
    return params["x"]


def returns_nan(params, reporter):
    reporter.report(0, 1.0)
    return math.nan if params["x"] > 0.5 else params["x"]


def always_fails(params, reporter):
    raise ValueError("this objective always fails")


def two_objectives(params, reporter):
    """Schaffer's problem: minimize x^2 and (x - 2)^2; the Pareto set is x in [0, 2]."""
    x = params["x"]
    reporter.report(0, x)
    return {"f1": x**2, "f2": (x - 2) ** 2}


def two_objectives_tuple(params, reporter):
    x = params["x"]
    return x**2, (x - 2) ** 2


def constrained_branin(params, reporter):
    """Branin with the constraint x1 + x2 <= 8 (feasible when x1 + x2 - 8 <= 0)."""
    from workers.builtin.analytic import branin_value

    return {"value": branin_value(params["x1"], params["x2"]), "constraints": [params["x1"] + params["x2"] - 8]}


def sleepy(params, reporter):
    """Sleeps `seconds` (a parameter) before returning; for trial timeouts."""
    time.sleep(params["seconds"])
    reporter.report(0, params["seconds"])
    return params["seconds"]


def straggler(params, reporter, done: str, others: int):
    """Trial 0 is a straggler: it reaches its first report only once ``others`` other trials have
    ended (each leaves a file in the folder ``done``; up to 60 s), however slowly its workers
    started. The others are quick."""
    if reporter.trial_number == 0:
        _wait_until(lambda: len(list(Path(done).iterdir())) >= others)
    try:
        for step in range(3):
            time.sleep(0.02)
            reporter.report(step, params["x"] + 1.0 / (step + 1))
        return params["x"]
    finally:
        if reporter.trial_number != 0:
            (Path(done) / f"{reporter.trial_number}").touch()


def gpu_probe(params, reporter, barrier: str | None = None, parties: int = 0, hold: float = 0.2):
    """Records which GPU Ray assigned, torch's thread count, and when the trial ran. With
    ``barrier`` (a folder), waits (up to 60 s) until ``parties`` trials have started, then runs
    ``hold`` seconds more, so trials that can run at once provably do, however slowly their
    workers started."""
    import os

    import torch

    start = time.time()
    if barrier:
        (Path(barrier) / f"{reporter.trial_number}").touch()
        _wait_until(lambda: len(list(Path(barrier).iterdir())) >= parties)
        time.sleep(hold)
    else:
        time.sleep(1.0)
    reporter.log(
        gpu=float(os.environ.get("CUDA_VISIBLE_DEVICES") or -1), threads=torch.get_num_threads(),
        start=start, end=time.time(),
    )
    return params["x"]


def pid_writer(params, reporter, workdir: str, steps: int = 6, delay: float = 0.25,
               gate: str | None = None, gate_trial: int = -1):
    """Leaves `<trial>-<pid>.pid` in `workdir` while it runs, so a test can kill its worker. With
    ``gate`` (a file), trial ``gate_trial`` waits (up to 60 s) until it exists before its last step."""
    import os

    mark = Path(workdir) / f"{reporter.trial_number}-{os.getpid()}.pid"
    mark.write_text("")
    try:
        value = params["x"]
        for step in range(steps):
            if gate and reporter.trial_number == gate_trial and step == steps - 1:
                _wait_until(Path(gate).exists)
            time.sleep(delay)
            reporter.report(step, value + 1.0 / (step + 1))
            with mark.open("a") as f:  # a line per step reported, for a test to wait on
                f.write(f"{step}\n")
        return value
    finally:
        mark.unlink(missing_ok=True)


_CALLS: list[int] = []  # module-level state: it lives as long as the worker process does


def counts_calls(params, reporter, delay: float = 0.05):
    """Logs how many trials this process ran before (a module-level cache's hits)."""
    _CALLS.append(reporter.trial_number)
    time.sleep(delay)
    reporter.log(calls=len(_CALLS))
    reporter.report(0, params["x"])
    return params["x"]


def dump_environment(params, reporter, path: str, hold: float = 0.0):
    """Writes what a trial can see of its process: environment and command line. ``hold``: seconds
    the trial then keeps its worker busy (so that the next trial goes to another one)."""
    import os

    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode()
    Path(path).write_text("\n".join(f"{k}={v}" for k, v in os.environ.items()) + "\n" + cmdline)
    time.sleep(hold)
    return params["x"]


def checkpointed(params, reporter, workdir: str, epochs: int = 10, die_after: int | None = None,
                 wait_after: int | None = None, delay: float = 0.0):
    """A training loop that checkpoints every epoch and continues from a checkpoint. Logs
    "<trial> <epoch>" per epoch it trains to ``workdir``/epochs.log. Trial 0 kills its own
    process (SIGKILL: a dead worker) after reporting epoch ``die_after``; with ``wait_after``,
    trial 0 leaves ``workdir``/waiting after that epoch and sleeps until it is stopped."""
    import os
    import signal

    state = reporter.load_checkpoint()
    start = 0 if state is None else state["epoch"] + 1
    assert state is None or state["x"] == params["x"]
    value = 0.0
    for epoch in range(start, epochs):
        if delay:
            time.sleep(delay)
        value = params["x"] + 1.0 / (epoch + 1)
        with open(Path(workdir) / "epochs.log", "a") as f:
            f.write(f"{reporter.trial_number} {epoch}\n")
        reporter.save_checkpoint({"epoch": epoch, "x": params["x"]}, step=epoch)
        reporter.report(epoch, value)
        if reporter.trial_number == 0 and epoch == die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if reporter.trial_number == 0 and epoch == wait_after:
            (Path(workdir) / "waiting").write_text("")
            time.sleep(600)
    return value


def pbt_score(params, reporter, epochs: int = 6, die_on_trial: int | None = None, stop_file: str | None = None):
    """A model whose score grows by x per epoch (maximize): the checkpoint holds the score, so a
    member that copies a better one continues from that one's score with its own x."""
    state = reporter.load_checkpoint()
    start, score = (0, 0.0) if state is None else (state["epoch"] + 1, state["score"])
    for epoch in range(start, epochs):
        score += params["x"]
        reporter.save_checkpoint({"epoch": epoch, "score": score}, step=epoch)
        reporter.report(epoch, score)
        if reporter.trial_number == die_on_trial:  # a worker killed mid-segment
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if stop_file and reporter.trial_number == 5:  # for a hand-back in the middle of generation 1
            Path(stop_file).write_text("")
            time.sleep(600)
    return score
