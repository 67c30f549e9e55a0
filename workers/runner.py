"""The trial runner: executes one trial of a user's objective inside a worker (a Ray actor or a
local worker process)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from workers.checkpoints import open_checkpoints
from workers.reporter import Pruned, Reporter

BUILTINS = {
    "mlp": "workers.builtin.mlp:objective",
    "cnn": "workers.builtin.cnn:objective",
    "transformer": "workers.builtin.transformer:objective",
    "gnn": "workers.builtin.gnn:objective",
    "branin": "workers.builtin.analytic:branin",
    "hartmann6": "workers.builtin.analytic:hartmann6",
}


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs for one trial; no database URL, no study handle."""

    key: str  # identifies this attempt of the trial in the report channel
    trial_number: int
    objective: str
    params: dict[str, Any]
    args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    cpu: float = 1.0
    import_path: str | None = None  # directory to import a user's objective module from
    n_values: int = 1  # how many objective values (directions) the study has
    metrics: tuple[str, ...] | None = None  # their names, for objectives that return a dict
    decisions: bool = True  # each report waits for the pruner's decision (False: no pruner)
    box: str = ""  # the study's mailbox in the report channel (one per running driver)
    checkpoint_dir: str | None = None  # the trial's folder or s3://, gs:// prefix (None: no checkpoints)


@dataclass
class TrialOutcome:
    state: str  # "complete" | "pruned" | "fail"
    values: list[float] | None = None
    constraints: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    last_step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    reports: dict[int, float] = field(default_factory=dict)  # all intermediate values sent
    node: str = ""
    device: str = "cpu"
    duration: float = 0.0
    started_at: float | None = None  # wall clock (epoch s) of the worker when it started the trial
    host: str = ""  # the node's IP address (Ray) or host name (local worker), for people to read
    cpu_s: float = 0.0  # CPU time of the worker process while it ran the trial
    gpu_s: float = 0.0  # wall time x GPUs assigned
    pid: int | None = None  # the worker process that ran the trial
    cold: bool = False  # the first trial of that process (it paid the process's start-up)
    startup_s: float | None = None  # cold only: the process's age once it had imported the objective
    startup_cpu_s: float | None = None  # cold only: CPU the process had spent by then
    resumed_step: int | None = None  # the step of the checkpoint the trial continued from
    saved_step: int | None = None  # the step of the last checkpoint it saved


def resolve_objective(ref: str, import_path: str | None = None):
    """Import ``builtin:<name>`` or ``package.module:function``; raises ImportError/ValueError."""
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in BUILTINS:
            raise ValueError(f"unknown builtin objective {name!r}; builtins: {', '.join(sorted(BUILTINS))}")
        ref = BUILTINS[name]
    module_name, _, attr = ref.partition(":")
    if import_path and import_path not in sys.path:
        sys.path.insert(0, import_path)
    module = importlib.import_module(module_name)
    try:
        func = getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(func):
        raise ValueError(f"{ref} is not callable")
    return func


def locate_objective(ref: str, import_path: str | None) -> str | None:
    """Find the objective's source without running any of it: its module file (in
    ``import_path``, else where Python would find it) and a top-level definition of the name in
    it. Returns the one line an import would fail with for a missing module, a syntax error or a
    missing name; None when it looks importable, or cannot be told without running the module
    (an extension module, ``from x import *``). ``check_objective`` is the full check."""
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        return None if name in BUILTINS else f"unknown builtin objective {name!r}; builtins: {', '.join(sorted(BUILTINS))}"
    module_name, _, attr = ref.partition(":")
    try:
        path = _module_file(module_name.split("."), import_path)
    except (ImportError, ValueError):
        return None
    cannot = f"objective {ref!r} cannot be imported"
    if path is None:
        hint = ""
        if module_name.endswith(".py"):  # a file name where a module name belongs
            hint = f" (name the module, not its file: '{module_name[:-3].replace('/', '.')}:{attr}')"
        return f"{cannot}: ModuleNotFoundError: No module named {module_name!r}{hint}"
    if not path.endswith(".py"):
        return None
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except SyntaxError as exc:
        return f"{cannot}: SyntaxError: {exc.msg} ({os.path.basename(path)}, line {exc.lineno})"
    except OSError:
        return None
    if any(_defines(node, attr) for node in tree.body):
        return None
    return f"{cannot}: ImportError: module {module_name!r} has no attribute {attr!r}"


def _defines(node: ast.AST, name: str) -> bool:
    """Whether ``node`` may bind ``name`` (a def, class, assignment or import; anywhere inside it,
    so a name bound under `if` or `try` counts; a star import may bind anything)."""
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name:
            return True
        if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store):
            return True
        if isinstance(n, (ast.Import, ast.ImportFrom)) and any(
                a.name == "*" or (a.asname or a.name).split(".")[0] == name for a in n.names):
            return True
    return False


def _module_file(parts: list[str], import_path: str | None) -> str | None:
    """The file of module ``parts`` (a.b.c), looked up as an import would, without importing."""
    locations: list[str] | None = None
    found = _in_dirs(parts[0], [import_path]) if import_path else None
    if found is None:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: imports nothing
        if spec is None:
            return None
        found = (spec.origin, list(spec.submodule_search_locations or []))
    origin, locations = found
    for part in parts[1:]:
        found = _in_dirs(part, locations or [])
        if found is None:
            return None
        origin, locations = found
    return origin or (locations[0] if locations else None)


def _in_dirs(name: str, dirs: list[str]) -> tuple[str | None, list[str]] | None:
    for folder in dirs:
        package = os.path.join(folder, name)
        if os.path.isfile(os.path.join(package, "__init__.py")):
            return os.path.join(package, "__init__.py"), [package]
        if os.path.isfile(package + ".py"):
            return package + ".py", []
        if os.path.isdir(package):  # a namespace package
            return None, [package]
    return None


def check_objective(ref: str, import_path: str | None, args: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Import the objective and call its module's ``check_args(objective_args, base_dir)`` hook if
    it has one. Returns (None, the checked args) or (one line saying what is wrong, args)."""
    try:
        func = resolve_objective(ref, import_path)
    except Exception as exc:  # ImportError, SyntaxError, errors raised at import time
        return f"objective {ref!r} cannot be imported: {type(exc).__name__}: {exc}", args
    check = getattr(sys.modules.get(func.__module__), "check_args", None)
    if check is not None:
        try:
            checked = check(dict(args), import_path)
        except (ValueError, TypeError, OSError) as exc:
            return f"objective_args: {exc}", args
        args = checked if isinstance(checked, dict) else args
    try:  # every trial would fail with "unexpected keyword argument" otherwise
        inspect.signature(func).bind(None, None, **args)
    except TypeError as exc:
        return f"objective_args: {ref} cannot take them: {exc}", args
    except ValueError:  # no signature to read (some builtins): the trials will tell
        pass
    return None, args


def parse_result(
    result: Any, n_values: int, metrics: tuple[str, ...] | None
) -> tuple[list[float], dict[str, float]]:
    """An objective's return value -> (values, constraints).

    Accepted: a number; a tuple/list of numbers (one per direction); or a dict of named metrics
    (names from the spec's ``metrics``), optionally with ``constraints`` as a dict or a list of
    numbers (feasible when all are <= 0).
    """
    constraints: dict[str, float] = {}
    if isinstance(result, dict):
        result = dict(result)
        raw = result.pop("constraints", None) or {}
        if isinstance(raw, dict):
            constraints = {str(k): float(v) for k, v in raw.items()}
        else:
            constraints = {f"c{i}": float(v) for i, v in enumerate(raw)}
        if metrics:
            missing = [m for m in metrics if m not in result]
            if missing:
                raise ValueError(f"objective result has no metric {missing[0]!r} (got {sorted(result)})")
            values = [result[m] for m in metrics]
        elif len(result) == 1:
            values = list(result.values())
        else:
            raise ValueError(
                f"objective returned metrics {sorted(result)}: name the ones to optimize in the spec's 'metrics'"
            )
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        values = [result]
    if len(values) != n_values:
        raise ValueError(f"objective returned {len(values)} value(s) for {n_values} direction(s)")
    return [float(v) for v in values], constraints


def pick_device() -> str:
    """The GPU Ray assigned to this worker (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def run_trial(task: TrialTask, send) -> TrialOutcome:
    """Run the objective with a reporter wired to ``send``; never raises for objective errors."""
    started, cpu_started = time.monotonic(), time.process_time()
    started_at = time.time()
    device = pick_device()
    _limit_threads(task.cpu)
    checkpoints = open_checkpoints(task.checkpoint_dir) if task.checkpoint_dir else None
    reporter = Reporter(trial_number=task.trial_number, seed=task.seed, device=device, send=send,
                        checkpoints=checkpoints)
    outcome = TrialOutcome(state="fail", node=_node(), host=_host(), device=device, started_at=started_at)
    try:
        objective = resolve_objective(task.objective, task.import_path)
        result = objective(dict(task.params), reporter, **task.args)
        outcome.values, outcome.constraints = parse_result(result, task.n_values, task.metrics)
        bad = [v for v in outcome.values if not math.isfinite(v)]
        if bad:
            outcome.error = f"objective returned {bad[0]}"
        else:
            outcome.state = "complete"
    except Pruned:
        outcome.state = "pruned"
    except Exception as exc:  # the objective's failure is data, not a crash of the runner
        outcome.error = _short_traceback(exc)
    outcome.last_step = reporter.last_step
    outcome.metrics = dict(reporter.metrics)
    outcome.history = dict(reporter.history)
    outcome.reports = dict(reporter.reported)
    outcome.resumed_step, outcome.saved_step = reporter.checkpoint_step, reporter.saved_step
    outcome.duration = time.monotonic() - started
    outcome.cpu_s = time.process_time() - cpu_started
    outcome.gpu_s = outcome.duration * _assigned_gpus()
    return outcome


def _assigned_gpus() -> float:
    ray = sys.modules.get("ray")  # a local worker never imports Ray (a second of start-up)
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return 0.0  # not in a Ray worker (e.g. a test calling run_trial in the driver)
    return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))


def _limit_threads(cpu: float) -> None:
    """Torch's threads follow the trial's CPUs, without importing torch for objectives that do
    not use it (the import costs a worker a second or more): torch reads OMP_NUM_THREADS when it
    loads, and a worker that loaded it already is told directly."""
    threads = max(1, int(cpu))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _node() -> str:
    """The Ray node id in a Ray worker; in a local worker process, the host's name."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return os.environ.get(LOCAL_NODE_VAR, "")


LOCAL_NODE_VAR = "HPO_LOCAL_NODE"  # set by the local backend in its worker processes


def _host() -> str:
    """Where the trial ran, as people name machines: the Ray node's IP address, else the host name."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.util.get_node_ip_address()
    return socket.gethostname()


def _short_traceback(exc: BaseException, lines: int = 12) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join(text[-lines:])


class ChannelLost(RuntimeError):
    """The report channel of the trial's driver died while the trial ran: nobody can receive its
    reports or decide on them. The trial was stopped at its next report; the driver (when it is
    alive) hands it back to be run again, the way it hands back trials it stops itself."""


def run_remote_trial(task: TrialTask, channel) -> TrialOutcome:
    """Ray task body: run the trial, sending each report through the driver's channel.

    Without prune decisions a report is not waited for (the trial goes on at once); the answer
    to the one before it is checked when it has arrived, so a trial whose driver stopped
    tracking it (its mailbox is closed: the answer is True) still stops at its next report
    instead of training on. When the channel itself is gone (its process died, or the driver's
    with it), the trial is stopped at that report too and the call raises ChannelLost: its
    outcome could not be told from one the objective chose.
    """
    import ray

    previous: list = []
    lost: list[str] = []

    def send(step: int, value: float) -> bool:
        if lost:
            return True
        try:
            ref = channel.report.remote(task.box, task.key, step, value, task.decisions)
            if task.decisions:
                return ray.get(ref)
            stop = bool(previous and ray.wait(previous, timeout=0)[0] and ray.get(previous[0]))
            previous[:] = [ref]
            return stop
        except ray.exceptions.RayActorError as exc:
            lost.append(f"{type(exc).__name__} at step {step}")
            return True  # stop here: the objective sees Pruned and ends as it would

    outcome = run_trial(task, send)
    if lost:
        raise ChannelLost(f"the report channel died during trial {task.trial_number} ({lost[0]})")
    return outcome
