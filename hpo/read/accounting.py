"""Compute and energy accounting: what a study used, and what pruning saved.

Every trial's worker measures what it used and the driver stores it in the trial's ``hpo:run``
user attribute: ``cpu_s`` (CPU time of the worker process, i.e. core-seconds), ``gpu_s`` (wall
time x GPUs assigned) and ``last_step`` (the last step it reported). Everything here is a small
pure function over those FrozenTrials, so `hpo status` and `hpo report` show the same numbers.

* Used: the sum over every trial that ran (complete, pruned and failed ones alike).
* Saved by pruning: a pruned trial stopped after ``last_step + 1`` epochs of a full run of
  ``full_epochs``; the epochs it did not train are priced at the cost per epoch measured on that
  trial (``cpu_s / (last_step + 1)``, likewise for GPU). ``full_epochs`` is the spec's
  ``objective_args.epochs`` when given, else the most steps any complete trial reported.
* Energy: ``(cpu_s * watts per CPU core + gpu_s * watts per GPU) / 3.6e6`` kWh. The watts are
  an assumption, configurable (``--cpu-watts``/``--gpu-watts`` or ``HPO_CPU_WATTS``/
  ``HPO_GPU_WATTS``); the defaults are typical for a server core and a datacenter GPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from hpo.store.attrs import INFO_ATTR

DEFAULT_CPU_WATTS = 15.0  # per CPU core
DEFAULT_GPU_WATTS = 300.0  # per GPU
CPU_WATTS_ENV = "HPO_CPU_WATTS"
GPU_WATTS_ENV = "HPO_GPU_WATTS"
JOULES_PER_KWH = 3.6e6


def resolve_watts(cpu_watts: float | None = None, gpu_watts: float | None = None) -> tuple[float, float]:
    """The watts to price energy with: given values, then the environment, then the defaults."""
    return (
        _watts(cpu_watts, CPU_WATTS_ENV, DEFAULT_CPU_WATTS),
        _watts(gpu_watts, GPU_WATTS_ENV, DEFAULT_GPU_WATTS),
    )


def _watts(value: float | None, env: str, default: float) -> float:
    source = "watts"
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        source = env
        try:
            value = float(text)
        except ValueError:
            raise HpoError(f"{env}={text!r} is not a number of watts") from None
    if not math.isfinite(value) or value < 0:
        raise HpoError(f"{source} must be a finite number >= 0, got {value!r}")
    return float(value)


def energy_kwh(cpu_s: float, gpu_s: float, cpu_watts: float, gpu_watts: float) -> float:
    """Energy of ``cpu_s`` core-seconds at ``cpu_watts`` per core plus ``gpu_s`` GPU-seconds."""
    return (cpu_s * cpu_watts + gpu_s * gpu_watts) / JOULES_PER_KWH


def run_info(trial: FrozenTrial) -> Mapping[str, Any]:
    """What the driver recorded about the trial's run (empty for trials it never collected)."""
    info = trial.user_attrs.get(INFO_ATTR)
    return info if isinstance(info, Mapping) else {}


def _number(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def node_labels(trials: Iterable[FrozenTrial]) -> dict[str, str]:
    """A readable name per node id: its host (IP or name); where several nodes share a host
    (Ray nodes started on one machine), the host with a short node id, ``10.0.0.5#3fa2c1``."""
    hosts: dict[str, str] = {}
    for trial in trials:
        info = run_info(trial)
        node = str(info.get("node") or "")
        if node:
            hosts.setdefault(node, str(info.get("host") or "") or node[:12])
    shared = {h for h in hosts.values() if sum(v == h for v in hosts.values()) > 1}
    return {node: f"{host}#{node[:6]}" if host in shared else host for node, host in hosts.items()}


def trial_cpu_s(trial: FrozenTrial) -> float:
    return _number(run_info(trial).get("cpu_s"))


def trial_gpu_s(trial: FrozenTrial) -> float:
    return _number(run_info(trial).get("gpu_s"))


def epochs_trained(trial: FrozenTrial) -> int | None:
    """Steps (epochs) the trial trained: ``last_step + 1`` from its run, else from its reports."""
    last = run_info(trial).get("last_step")
    if isinstance(last, int) and not isinstance(last, bool) and last >= 0:
        return last + 1
    if trial.intermediate_values:
        return max(trial.intermediate_values) + 1
    return None


def full_epochs(trials: Iterable[FrozenTrial], objective_args: Mapping[str, Any] | None = None) -> int | None:
    """Epochs of a full (unpruned) run: the spec's ``objective_args.epochs`` when it is a positive
    integer, else the most epochs a complete trial trained; None when neither is known."""
    epochs = (objective_args or {}).get("epochs")
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and epochs >= 1 and float(epochs).is_integer():
        return int(epochs)
    done = [epochs_trained(t) for t in trials if t.state == TrialState.COMPLETE]
    done = [n for n in done if n is not None]
    return max(done) if done else None


@dataclass(frozen=True)
class Saving:
    """What pruning one trial saved: the epochs it did not train, priced at its own cost per epoch."""

    number: int
    epochs_trained: int
    epochs_saved: int
    cpu_s: float
    gpu_s: float


def pruning_saving(trial: FrozenTrial, full: int | None) -> Saving | None:
    """The saving of one pruned trial; None for other states, or when it cannot be estimated."""
    if trial.state != TrialState.PRUNED or full is None:
        return None
    trained = epochs_trained(trial)
    if not trained:
        return None
    saved = max(full - trained, 0)
    return Saving(
        number=trial.number,
        epochs_trained=trained,
        epochs_saved=saved,
        cpu_s=trial_cpu_s(trial) / trained * saved,
        gpu_s=trial_gpu_s(trial) / trained * saved,
    )


def study_compute(
    trials: Iterable[FrozenTrial],
    objective_args: Mapping[str, Any] | None = None,
    *,
    cpu_watts: float | None = None,
    gpu_watts: float | None = None,
) -> dict[str, Any]:
    """Totals for a study, as plain data (what `hpo status --json` shows under ``compute``)."""
    trials = list(trials)
    cpu_watts, gpu_watts = resolve_watts(cpu_watts, gpu_watts)
    measured = [t for t in trials if t.state.is_finished() and run_info(t)]
    cpu_s = sum(trial_cpu_s(t) for t in measured)
    gpu_s = sum(trial_gpu_s(t) for t in measured)
    full = full_epochs(trials, objective_args)
    savings = [s for s in (pruning_saving(t, full) for t in trials) if s is not None]
    saved_cpu = sum(s.cpu_s for s in savings)
    saved_gpu = sum(s.gpu_s for s in savings)
    return {
        "trials_measured": len(measured),
        "workers": worker_startup(trials),
        "cpu_s": cpu_s,
        "gpu_s": gpu_s,
        "cpu_hours": cpu_s / 3600,
        "gpu_hours": gpu_s / 3600,
        "kwh": energy_kwh(cpu_s, gpu_s, cpu_watts, gpu_watts),
        "cpu_watts": cpu_watts,
        "gpu_watts": gpu_watts,
        "saved": {
            "full_epochs": full,
            "pruned_trials": len(savings),
            "epochs": sum(s.epochs_saved for s in savings),
            "cpu_s": saved_cpu,
            "gpu_s": saved_gpu,
            "cpu_hours": saved_cpu / 3600,
            "gpu_hours": saved_gpu / 3600,
            "kwh": energy_kwh(saved_cpu, saved_gpu, cpu_watts, gpu_watts),
        },
    }


def worker_startup(trials: Iterable[FrozenTrial]) -> dict[str, Any]:
    """The worker processes that ran the trials, and what they spent before their first trial
    (process start, imports, data an objective builds at module level): start-up, not training."""
    infos = [run_info(t) for t in trials]
    processes = {(info.get("node"), info["pid"]) for info in infos if info.get("pid") is not None}
    cold = [info for info in infos if info.get("cold_start")]
    return {
        "processes": len(processes),
        "cold_starts": len(cold),
        "startup_cpu_s": sum(_number(info.get("startup_cpu_s")) for info in cold),
        "startup_s": sum(_number(info.get("startup_s")) for info in cold),
    }


def human_energy(kwh: float) -> str:
    """An energy in the unit that reads best: mWh, Wh or kWh (3 significant digits)."""
    wh = kwh * 1000
    if wh == 0:
        return "0 Wh"
    if abs(wh) < 1:
        return f"{wh * 1000:.3g} mWh"
    return f"{wh:.3g} Wh" if abs(wh) < 1000 else f"{kwh:.3g} kWh"


def human_compute(seconds: float, unit: str) -> str:
    """CPU or GPU time: ``12.3 CPU-s`` below ten minutes, ``1.5 CPU-min`` below an hour, else hours."""
    if seconds < 600:
        return f"{seconds:.3g} {unit}-s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} {unit}-min"
    return f"{seconds / 3600:.3g} {unit}-h"


def usage_text(data: Mapping[str, Any], gpu: bool) -> str:
    """``3.2 CPU-s, 13.3 mWh`` (with GPU time only where GPUs were used or asked for)."""
    parts = [human_compute(data["cpu_s"], "CPU")]
    if gpu:
        parts.append(human_compute(data["gpu_s"], "GPU"))
    return ", ".join([*parts, human_energy(data["kwh"])])
