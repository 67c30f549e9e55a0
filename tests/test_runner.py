"""The worker-side trial runner: result parsing, failures, pruning, objective resolution."""

from __future__ import annotations

import re

import pytest

from workers.runner import TrialTask, parse_result, resolve_objective, run_trial

from conftest import TESTS_DIR


def test_parse_result_forms():
    assert parse_result(1.5, 1, None) == ([1.5], {})
    assert parse_result((1, 2), 2, None) == ([1.0, 2.0], {})
    assert parse_result({"acc": 0.9, "loss": 0.1}, 2, ("loss", "acc")) == ([0.1, 0.9], {})
    assert parse_result({"value": 3, "constraints": [1, -2]}, 1, None) == ([3.0], {"c0": 1.0, "c1": -2.0})
    assert parse_result({"v": 3, "constraints": {"mem": 0.5}}, 1, None) == ([3.0], {"mem": 0.5})


@pytest.mark.parametrize(
    "result, n, metrics, message",
    [
        ((1, 2), 1, None, "returned 2 value(s) for 1 direction(s)"),
        ({"a": 1, "b": 2}, 1, None, "name the ones to optimize"),
        ({"a": 1}, 1, ("acc",), "has no metric 'acc'"),
    ],
)
def test_parse_result_errors(result, n, metrics, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_result(result, n, metrics)


def task(objective: str, params: dict, **kw) -> TrialTask:
    return TrialTask(key="k", trial_number=0, objective=objective, params=params, import_path=str(TESTS_DIR), **kw)


def test_run_trial_outcomes():
    sent = []
    ok = run_trial(task("objectives:curve", {"x": 0.3, "y": -0.1}, args={"steps": 3}), lambda s, v: sent.append(s) or False)
    assert ok.state == "complete" and ok.values == [pytest.approx(1 / 3)] and sent == [0, 1, 2] and ok.last_step == 2
    pruned = run_trial(task("objectives:curve", {"x": 0.3}), lambda s, v: s == 1)
    assert pruned.state == "pruned" and pruned.last_step == 1
    failed = run_trial(task("objectives:fails_when_x_large", {"x": 0.9}), lambda s, v: False)
    assert failed.state == "fail" and "RuntimeError: x too large: 0.900" in failed.error
    nan = run_trial(task("objectives:returns_nan", {"x": 0.9}), lambda s, v: False)
    assert nan.state == "fail" and nan.error == "objective returned nan"


def test_resolve_objective_errors():
    with pytest.raises(ValueError, match="unknown builtin objective 'nope'"):
        resolve_objective("builtin:nope")
    with pytest.raises(ImportError, match="has no attribute 'missing'"):
        resolve_objective("objectives:missing", str(TESTS_DIR))
    with pytest.raises(ModuleNotFoundError):
        resolve_objective("no_such_module_xyz:f")
