"""What both peer scripts do first: read the study from hpo's spec file, pin threads as hpo pins
them, and import the objective from the spec's folder (as hpo does).

Each peer runs the very spec that `hpo run` gets, so the objective, its arguments, the search
space, the seed, the pruner and the budget cannot drift apart between the systems.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def load(spec_path: str) -> tuple[dict[str, Any], Callable, int]:
    """(spec, objective, threads per trial). Call before anything imports torch."""
    path = Path(spec_path).resolve()
    spec = yaml.safe_load(path.read_text())
    # hpo gives each trial int(cpu) threads (at least one): OMP_NUM_THREADS before torch loads,
    # torch.set_num_threads once it has. A training script run side by side does the same.
    threads = max(1, int(spec.get("resources", {}).get("cpu", 1)))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    sys.path.insert(0, str(path.parent))
    module, _, name = spec["objective"].partition(":")
    objective = getattr(importlib.import_module(module), name)
    pin_threads(threads)
    return spec, objective, threads


def pin_threads(threads: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def pruner_options(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    pruner = spec.get("pruner", "none")
    pruner = {"name": pruner} if isinstance(pruner, str) else pruner
    return pruner["name"], dict(pruner.get("options", {}))
