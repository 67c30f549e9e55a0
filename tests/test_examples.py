"""Every examples/*.yaml runs through `hpo run` (hpo.api.run) with a small budget.

The examples are written for a real search (tens of trials, 10-12 epochs); here each runs 3
trials, at most 3 epochs and little generated data, so the whole file stays under a minute on
2 CPUs. One example
also runs exactly as written apart from n_trials, from another working directory.
"""

from __future__ import annotations

import difflib
import sys

import pytest

from hpo import api
from hpo.spec.study import load_spec
from workers import Reporter

from conftest import REPO

EXAMPLES_DIR = REPO / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
N_TRIALS = 3
# Caps for the objective_args an example sets: a small budget, not a different study.
CAPS = {"epochs": 3, "n_train": 500, "n_val": 200, "n_graphs": 200}


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {
        "digits-mlp.yaml", "digits-cnn.yaml", "sort-transformer.yaml", "graphs-gnn.yaml",
        "tabular-csv.yaml", "custom-objective.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_through_hpo_run(tmp_path, path):
    spec = load_spec(path, n_trials=N_TRIALS)
    args = {k: min(int(v), CAPS[k]) if k in CAPS else v for k, v in spec.objective_args.items()}
    spec = load_spec(path, n_trials=N_TRIALS, objective_args=args)
    summary = api.run(spec, storage=f"sqlite:///{tmp_path}/x.db", backend="local")
    assert summary.state == "COMPLETED", summary.message
    assert summary.complete + summary.pruned == N_TRIALS and summary.failed == 0
    assert summary.best_value is not None and 0.0 <= summary.best_value <= 1.0


def test_tabular_csv_example_as_written_from_another_directory(tmp_path, monkeypatch):
    """The dataset path in the spec is relative to the spec's folder, not to where hpo runs."""
    monkeypatch.chdir(tmp_path)
    summary = api.run(EXAMPLES_DIR / "tabular-csv.yaml", storage=f"sqlite:///{tmp_path}/x.db", n_trials=2, backend="local")
    assert summary.state == "COMPLETED", summary.message
    assert summary.complete + summary.pruned == 2 and summary.best_value > 0.6  # better than guessing


def test_custom_objective_is_the_plain_script_with_at_most_ten_changed_lines():
    plain = (EXAMPLES_DIR / "plain_train.py").read_text().splitlines()
    custom = (EXAMPLES_DIR / "custom_objective.py").read_text().splitlines()
    diff = list(difflib.unified_diff(plain, custom, lineterm="", n=0))
    added = [line for line in diff if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in diff if line.startswith("-") and not line.startswith("---")]
    assert 0 < len(added) <= 10 and len(removed) <= 10, "\n".join(diff)


def test_custom_objective_runs_outside_hpo(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES_DIR))
    sys.modules.pop("custom_objective", None)
    import custom_objective

    reports = []
    reporter = Reporter(seed=0, send=lambda step, value: reports.append(step) or False)
    params = {"lr": 1e-3, "batch_size": 64, "hidden": 64, "dropout": 0.1, "weight_decay": 1e-4}
    value = custom_objective.objective(params, reporter, epochs=2)
    assert reports == [0, 1] and 0.0 < value <= 1.0 and "train_accuracy" in reporter.metrics
