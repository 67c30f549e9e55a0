"""The worker-side trial runner: result parsing, failures, pruning, objective resolution."""

from __future__ import annotations

import re
import sys

import pytest

from workers.runner import TrialTask, locate_objective, parse_result, resolve_objective, run_trial

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


def test_locate_objective_finds_typos_without_running_the_module(tmp_path):
    (tmp_path / "train.py").write_text(
        "open(__file__ + '.ran', 'w').close()\n"  # a side effect at import: must not happen
        "def objective(params, reporter):\n    return 1\n"
        "try:\n    from fast import other\nexcept ImportError:\n    def other(params, reporter):\n        return 2\n"
    )
    (tmp_path / "broken.py").write_text("def objective(params, reporter)\n    return 1\n")
    (tmp_path / "star.py").write_text("from train import *\n")
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "mod.py").write_text("objective = lambda params, reporter: 1\n")
    here = str(tmp_path)
    for ok in ("train:objective", "train:other", "star:objective", "pkg.sub.mod:objective", "builtin:mlp",
               "objectives:curve"):
        assert locate_objective(ok, here if not ok.startswith("objectives") else str(TESTS_DIR)) is None, ok
    assert not (tmp_path / "train.py.ran").exists() and "train" not in sys.modules
    assert locate_objective("trian:objective", here) == (
        "objective 'trian:objective' cannot be imported: ModuleNotFoundError: No module named 'trian'")
    assert locate_objective("pkg.sub.nope:objective", here) == (
        "objective 'pkg.sub.nope:objective' cannot be imported: ModuleNotFoundError: No module named 'pkg.sub.nope'")
    assert locate_objective("train.py:objective", here) == (
        "objective 'train.py:objective' cannot be imported: ModuleNotFoundError: No module named 'train.py' "
        "(name the module, not its file: 'train:objective')")
    assert locate_objective("train:objectiv", here) == (
        "objective 'train:objectiv' cannot be imported: ImportError: module 'train' has no attribute 'objectiv'")
    assert locate_objective("broken:objective", here).startswith(
        "objective 'broken:objective' cannot be imported: SyntaxError: expected ':' (broken.py, line 1)")
    assert locate_objective("builtin:nope", here).startswith("unknown builtin objective 'nope'")


def test_objective_args_are_checked_against_the_signature(tmp_path):
    from workers.runner import check_objective

    (tmp_path / "sig.py").write_text("def objective(params, reporter, epochs=3):\n    return 1\n"
                                     "def open_ended(params, reporter, **kw):\n    return 1\n")
    assert check_objective("sig:objective", str(tmp_path), {"epochs": 5}) == (None, {"epochs": 5})
    assert check_objective("sig:open_ended", str(tmp_path), {"anything": 1})[0] is None
    error, _ = check_objective("sig:objective", str(tmp_path), {"epoch": 5})
    assert error == "objective_args: sig:objective cannot take them: got an unexpected keyword argument 'epoch'"
