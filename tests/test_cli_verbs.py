"""Every `hpo` verb through the installed console script (real subprocesses, no mocks).

Completed studies are made cheaply in this process with hpo.api.run on local workers; the
verb under test always runs as `hpo ...` in a subprocess. Most tests share one SQLite store;
a test that changes a study's state works on a study of its own.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hpo import api

from serves import write_spec
from shell import HPO, SECRET, as_json, assert_one_line_error, hpo, hpo_many, ok, with_password
from studies import make_spec

# Studies in the shared store, made once per module.
DONE, DONE_N = "done", 4  # completed, read-only: list, status, best, trials, export, cancel error
MORE, MORE_N = "more", 3  # completed: resume --n-trials raises its budget
DOOMED = "doomed"  # completed: deleted by test_delete_asks_first_and_deletes_with_yes
MO, MO_N = "mo", 6  # completed multi-objective (Pareto front)


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-verbs")
    url = f"sqlite:///{tmp / 'shared.db'}"
    for seed, (name, n) in enumerate(((DONE, DONE_N), (MORE, MORE_N), (DOOMED, 2))):
        summary = api.run(write_spec(tmp, name, n=n, seed=seed), storage=url, backend="local")
        assert summary.state == "COMPLETED" and summary.complete + summary.pruned == n, summary
    mo = make_spec(
        name=MO, objective="objectives:two_objectives", search_space={"x": {"type": "float", "low": -2, "high": 4}},
        directions=["minimize", "minimize"], metrics=["f1", "f2"], sampler="nsgaii", n_trials=MO_N,
    )
    summary = api.run(mo, storage=url, backend="local")
    assert summary.state == "COMPLETED" and summary.complete == MO_N, summary
    return SimpleNamespace(url=url, dir=tmp)


# --- submit -------------------------------------------------------------------------------------


def test_submit_queues_a_study_and_refuses_a_taken_name(shared):
    spec = write_spec(shared.dir, "queued", n=5)
    # --name and --n-trials override the spec's.
    result = hpo("submit", str(spec), "--name", "queued-7", "--n-trials", "7", "--storage", shared.url)
    assert ok(result).strip() == "queued-7"
    assert "queued-7" in optuna.get_all_study_names(shared.url)

    listed, again, best = hpo_many(
        ["list", "--json", "--storage", shared.url],
        ["submit", str(spec), "--name", "queued-7", "--storage", shared.url],
        ["best", "queued-7", "--storage", shared.url],  # no completed trial yet
    )
    row = {row["study_name"]: row for row in as_json(listed)}["queued-7"]
    assert row["state"] == "QUEUED" and row["n_trials"] == 7
    assert row["complete"] == 0 and row["best_trial"] is None
    assert_one_line_error(again, f"study 'queued-7' already exists in {shared.url} (queued)")
    assert_one_line_error(best, "study 'queued-7' has no completed feasible trial yet")
    assert api.status("queued-7", storage=shared.url).n_trials == 7  # the refused submit changed nothing


# --- list ---------------------------------------------------------------------------------------


def test_list_table_and_json(shared):
    listed, table = hpo_many(["list", "--json", "--storage", shared.url], ["list", "--storage", shared.url])
    rows = {row["study_name"]: row for row in as_json(listed)}
    assert {DONE, MORE, MO} <= set(rows)
    for name, n in ((DONE, DONE_N), (MORE, MORE_N), (MO, MO_N)):
        row, study = rows[name], load(shared.url, name)
        trials = study.get_trials(deepcopy=False)
        assert row["state"] == "COMPLETED" and row["n_trials"] == n and row["storage"] == shared.url
        assert row["complete"] == sum(t.state == TrialState.COMPLETE for t in trials)
        assert row["complete"] + row["pruned"] == n and row["running"] == 0
    assert rows[DONE]["best_value"] == load(shared.url, DONE).best_value
    assert rows[DONE]["best_trial"] == load(shared.url, DONE).best_trial.number
    front = {t.number for t in load(shared.url, MO).best_trials}
    assert {e["number"] for e in rows[MO]["pareto_front"]} == front and rows[MO]["best_trial"] is None

    lines = {line.split()[1]: line for line in ok(table).splitlines() if line.startswith("│")}
    assert set(rows) == set(lines)
    assert "completed" in lines[DONE] and f"{DONE_N}/{DONE_N}" in lines[DONE]
    assert f"{rows[DONE]['best_value']:.6g}" in lines[DONE]
    assert f"{len(front)} on front" in lines[MO] and f"{MO_N}/{MO_N}" in lines[MO]


# --- status -------------------------------------------------------------------------------------


def test_status_table_json_and_watch(shared):
    study = load(shared.url, DONE)
    as_dict, table, watched = hpo_many(
        ["status", DONE, "--json", "--storage", shared.url],
        ["status", DONE, "--storage", shared.url],
        # --watch on a finished study draws once and returns: one wait of an hour would time out
        ["status", DONE, "--watch", "--interval", "3600", "--storage", shared.url],
        timeout=120,
    )
    summary = as_json(as_dict)
    assert summary["study_name"] == DONE and summary["state"] == "COMPLETED" and summary["storage"] == shared.url
    assert summary["n_trials"] == DONE_N and summary["complete"] + summary["pruned"] == DONE_N
    assert summary["failed"] == 0 and summary["running"] == 0
    assert summary["best_trial"] == study.best_trial.number and summary["best_value"] == study.best_value
    assert summary["best_params"] == study.best_params

    # The worker processes that ran the trials, and their start-up apart from the trials' CPU.
    pids = {t.user_attrs["hpo:run"]["pid"] for t in study.trials}
    workers = summary["compute"]["workers"]
    assert workers["processes"] == workers["cold_starts"] == len(pids) >= 1
    assert workers["startup_cpu_s"] > 0
    for result in (table, watched):
        text = ok(result)
        assert f"{len(pids)} processes ran the trials" in text
        assert f"study {DONE}: completed" in text
        assert f"{DONE_N} of {DONE_N} finished" in text
        assert f"{study.best_value:.6g} (trial {study.best_trial.number})" in text
        assert result.stderr == ""


def test_every_read_verb_speaks_json_and_csv(shared):
    """--format json|csv on list, status and best (--json stays an alias); CSV is flattened."""
    study = load(shared.url, DONE)
    listed_csv, listed_json, status_csv, best_csv, best_json = hpo_many(
        ["list", "--format", "csv", "--storage", shared.url],
        ["list", "--format", "json", "--storage", shared.url],
        ["status", DONE, "--format", "csv", "--storage", shared.url],
        ["best", DONE, "--format", "csv", "--storage", shared.url],
        ["best", DONE, "--format", "json", "--storage", shared.url],
    )
    by_name = {row["study_name"]: row for row in csv.DictReader(io.StringIO(ok(listed_csv)))}
    assert set(by_name) == {row["study_name"] for row in as_json(listed_json)}
    assert by_name[DONE]["state"] == "COMPLETED" and int(by_name[DONE]["complete"]) + int(by_name[DONE]["pruned"]) == DONE_N
    assert float(by_name[DONE]["best_value"]) == study.best_value
    for key, value in study.best_params.items():
        assert float(by_name[DONE][f"best_params_{key}"]) == value
    (status_row,) = csv.DictReader(io.StringIO(ok(status_csv)))
    assert status_row["study_name"] == DONE and float(status_row["compute_cpu_s"]) > 0
    (best_row,) = csv.DictReader(io.StringIO(ok(best_csv)))
    assert int(best_row["number"]) == study.best_trial.number and float(best_row["value"]) == study.best_value
    assert as_json(best_json)["number"] == study.best_trial.number


def test_status_watch_as_json_prints_one_object_per_redraw(shared, tmp_path):
    """A running study: a JSON line per redraw until it finishes (not silently a table)."""
    spec = write_spec(tmp_path, "watched", n=4)
    spec.write_text(spec.read_text().replace("delay: 0.05", "delay: 0.4"))
    url = f"sqlite:///{tmp_path / 'watched.db'}"
    api.submit(spec, storage=url)
    env = {k: v for k, v in os.environ.items() if k not in ("HPO_STORAGE", "HPO_BACKEND")}
    watcher = subprocess.Popen([HPO, "status", "watched", "--watch", "--interval", "0.5", "--json", "--storage", url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    runner = subprocess.run([HPO, "run", str(spec), "--storage", url, "--backend", "local"], capture_output=True,
                            text=True, env=env, timeout=240)
    assert runner.returncode == 0, runner.stderr
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0 and err == "", err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) >= 2 and lines[0]["state"] in ("QUEUED", "RUNNING")
    assert lines[-1]["state"] == "COMPLETED" and lines[-1]["complete"] + lines[-1]["pruned"] == 4


def test_verbs_that_run_no_trials_do_not_import_ray(shared):
    """`hpo --help`, list and status start fast: Ray is imported only by verbs that run trials,
    and the bucket clients (boto3, google-cloud-storage: a third of a second, installed here by
    the test extras) only where checkpoints in a bucket are used."""
    heavy = ("ray", "torch", "boto3", "google.cloud.storage", "optuna.artifacts")
    probe = ("import sys; from hpo.cli import main; sys.argv = ['hpo', *sys.argv[1:]]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             f"print('IMPORTED', *[m for m in {heavy!r} if m in sys.modules], file=sys.stderr)")
    for args in (["--help"], ["list", "--storage", shared.url], ["status", DONE, "--storage", shared.url],
                 ["trials", DONE, "--storage", shared.url]):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines()[-1] == "IMPORTED", (args, result.stderr)


def test_verbose_flag_logs_to_stderr(shared, tmp_path):
    spec = write_spec(tmp_path, "loud", n=2)
    url = f"sqlite:///{tmp_path / 'loud.db'}"
    quiet, loud = hpo_many(["run", str(spec), "--storage", url, "--name", "quiet", "--json"],
                           ["-v", "run", str(spec), "--storage", url.replace("loud.db", "loud2.db"), "--json"])
    assert ok(quiet) and quiet.stderr == ""
    assert ok(loud) and " INFO " in loud.stderr and "hpo." in loud.stderr


# --- best ---------------------------------------------------------------------------------------


def test_best_single_objective(shared):
    best = load(shared.url, DONE).best_trial
    as_dict, table = hpo_many(["best", DONE, "--json", "--storage", shared.url], ["best", DONE, "--storage", shared.url])
    assert as_json(as_dict) == {"number": best.number, "value": best.value, "params": best.params}
    text = ok(table)
    assert f"study {DONE}: best trial {best.number}" in text
    assert "value (minimize)" in text and f"{best.value:.6g}" in text
    for key, value in best.params.items():
        assert key in text and f"{value:.6g}" in text


def test_best_multi_objective_pareto_front(shared):
    study = load(shared.url, MO)
    front = {t.number: t for t in study.best_trials}
    as_dict, table = hpo_many(["best", MO, "--json", "--storage", shared.url], ["best", MO, "--storage", shared.url])
    data = as_json(as_dict)
    assert set(data) == {"pareto_front"}
    assert [e["number"] for e in data["pareto_front"]] == sorted(front, key=lambda n: front[n].values)
    for entry in data["pareto_front"]:
        trial = front[entry["number"]]
        assert entry["values"] == trial.values and entry["params"] == trial.params
        x = entry["params"]["x"]
        assert entry["values"] == pytest.approx([x**2, (x - 2) ** 2])
    text = ok(table)
    assert f"study {MO}: Pareto front" in text
    assert "f1 (minimize)" in text and "f2 (minimize)" in text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert [int(line.split("│")[1]) for line in rows] == [e["number"] for e in data["pareto_front"]]


# --- trials -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [DONE, MO])
def test_trials_table_json_and_csv_match_optuna(shared, name):
    expected = [
        {"number": t.number, "state": t.state.name, "values": t.values, "params": t.params,
         "steps": len(t.intermediate_values)}
        for t in load(shared.url, name).get_trials(deepcopy=False)
    ]
    assert expected and all(e["state"] in ("COMPLETE", "PRUNED") for e in expected)
    keys = list(expected[0])
    as_json_, as_csv, as_table = hpo_many(
        *(["trials", name, "--format", fmt, "--storage", shared.url] for fmt in ("json", "csv", "table"))
    )

    rows = as_json(as_json_)
    assert [{k: r[k] for k in keys} for r in rows] == expected
    stored = {t.number: t.user_attrs["hpo:run"] for t in load(shared.url, name).get_trials(deepcopy=False)}
    assert all(r["pid"] == stored[r["number"]]["pid"] and r["cold_start"] == stored[r["number"]]["cold_start"]
               for r in rows)

    # CSV: JSON's fields, nested ones flattened as Optuna's trials_dataframe() names them
    reader = csv.DictReader(io.StringIO(ok(as_csv)))
    n_values, names = len(expected[0]["values"]), sorted(expected[0]["params"])
    assert {f"values_{i}" for i in range(n_values)} | {f"params_{p}" for p in names} <= set(reader.fieldnames)
    assert "values" not in reader.fieldnames and "params" not in reader.fieldnames
    parsed = [
        {"number": int(r["number"]), "state": r["state"],
         "values": [float(r[f"values_{i}"]) for i in range(n_values)],
         "params": {p: float(r[f"params_{p}"]) for p in names}, "steps": int(r["steps"])}
        for r in reader
    ]
    assert parsed == expected

    table = ok(as_table)
    assert f"study {name}: {len(expected)} trials" in table
    cells = [line.split("│") for line in table.splitlines() if line.startswith("│")]
    assert [(int(c[1]), c[2].strip()) for c in cells] == [(e["number"], e["state"].lower()) for e in expected]


# --- cancel and resume --------------------------------------------------------------------------


def test_cancel_a_queued_study_then_resume_it(shared):
    name = api.submit(write_spec(shared.dir, "to-cancel", n=3), storage=shared.url)
    assert ok(hpo("cancel", name, "--storage", shared.url)).strip() == f"{name}: cancelled"
    assert api.status(name, storage=shared.url).state == "CANCELLED"

    assert ok(hpo("resume", name, "--storage", shared.url)).strip() == f"{name}: queued"
    summary = api.status(name, storage=shared.url)
    assert summary.state == "QUEUED" and summary.n_trials == 3
    # Resuming a study that is queued already is an error.
    assert_one_line_error(hpo("resume", name, "--storage", shared.url), f"study '{name}' is already queued")


def test_cancel_a_completed_study_is_an_error(shared):
    result = hpo("cancel", DONE, "--storage", shared.url)
    assert_one_line_error(
        result, f"study '{DONE}' is completed; only queued, running or interrupted studies can be cancelled")
    assert api.status(DONE, storage=shared.url).state == "COMPLETED"


def test_resume_a_completed_study_with_a_larger_budget(shared):
    assert_one_line_error(
        hpo("resume", MORE, "--storage", shared.url),
        f"study '{MORE}' already has {MORE_N} finished trials; give a larger budget with --n-trials")
    assert api.status(MORE, storage=shared.url).state == "COMPLETED"

    result = hpo("resume", MORE, "--n-trials", "5", "--storage", shared.url)
    assert ok(result).strip() == f"{MORE}: queued with n_trials=5"
    summary = as_json(hpo("status", MORE, "--json", "--storage", shared.url))
    assert summary["state"] == "QUEUED" and summary["n_trials"] == 5
    assert summary["complete"] + summary["pruned"] == MORE_N  # the finished trials are kept


# --- export -------------------------------------------------------------------------------------


def check_export(data: dict, url: str, name: str) -> None:
    study = load(url, name)
    assert data["study_name"] == name and data["state"] == "COMPLETED"
    assert data["spec"]["name"] == name
    assert data["directions"] == [d.name.lower() for d in study.directions]
    assert data["metric_names"] == study.metric_names
    trials = study.get_trials(deepcopy=False)
    assert [t["number"] for t in data["trials"]] == [t.number for t in trials]
    for exported, trial in zip(data["trials"], trials):
        assert exported["state"] == trial.state.name
        assert exported["values"] == trial.values and exported["params"] == trial.params
        assert exported["intermediate_values"], "every trial reported at least one step"
        assert {int(k): v for k, v in exported["intermediate_values"].items()} == trial.intermediate_values
        assert exported["datetime_start"] == trial.datetime_start.isoformat()


def test_export_to_stdout_and_to_a_file(shared, tmp_path):
    out = tmp_path / "done.json"
    to_stdout, to_file = hpo_many(
        ["export", DONE, "--storage", shared.url], ["export", DONE, "-o", str(out), "--storage", shared.url])
    data = as_json(to_stdout)
    check_export(data, shared.url, DONE)
    assert ok(to_file).strip() == f"{DONE}: exported to {out}"
    assert json.loads(out.read_text()) == data


def test_export_to_a_missing_folder_is_one_line(shared, tmp_path):
    out = tmp_path / "no-such-dir" / "done.json"
    assert_one_line_error(hpo("export", DONE, "-o", str(out), "--storage", shared.url), "no-such-dir")


# --- delete -------------------------------------------------------------------------------------


def test_delete_asks_first_and_deletes_with_yes(shared):
    (refused,) = hpo_many(["delete", DOOMED, "--storage", shared.url], stdins=["n\n"])
    assert refused.returncode != 0, refused
    assert f"delete study '{DOOMED}' and all its trials?" in refused.stdout
    assert refused.stderr.strip() == "aborted"
    assert DOOMED in optuna.get_all_study_names(shared.url)
    assert api.status(DOOMED, storage=shared.url).state == "COMPLETED"

    assert ok(hpo("delete", DOOMED, "--yes", "--storage", shared.url)).strip() == f"{DOOMED}: deleted"
    assert DOOMED not in optuna.get_all_study_names(shared.url)
    names = {row["study_name"] for row in as_json(hpo("list", "--json", "--storage", shared.url))}
    assert DOOMED not in names and DONE in names


# --- bad input: one line on stderr, exit 2, nothing on stdout -----------------------------------

VERBS_TAKING_A_NAME = ["status", "best", "trials", "cancel", "resume", "export", "delete"]


def test_unknown_study_for_every_verb(shared):
    # delete must refuse before it asks (its stdin is empty: a prompt would read "aborted").
    results = hpo_many(*([verb, "ghost", "--storage", shared.url] for verb in VERBS_TAKING_A_NAME))
    for result in results:
        assert_one_line_error(result, f"no study named 'ghost' in {shared.url}")


def test_bad_format_and_usage_errors_are_one_line(shared, tmp_path):
    fresh = f"sqlite:///{tmp_path / 'none.db'}"
    cases = {
        ("trials", DONE, "--format", "xml", "--storage", shared.url): "'xml' is not one of 'table', 'json', 'csv'",
        ("list", "--format", "yaml", "--storage", fresh): "'yaml' is not one of 'table', 'json', 'csv'",
        ("list", "--bogus", "--storage", fresh): "No such option '--bogus'",
        ("status", "--storage", fresh): "Missing argument 'NAME'",
        ("resume", DONE, "--n-trials", "0", "--storage", shared.url): "Invalid value for '--n-trials'",
    }
    results = hpo_many(*(list(args) for args in cases))
    for (args, expected), result in zip(cases.items(), results):
        assert_one_line_error(result, expected)
    assert not (tmp_path / "none.db").exists()
    assert api.status(DONE, storage=shared.url).n_trials == DONE_N


# --- no password in output ----------------------------------------------------------------------


def test_password_never_shown_by_list_and_status_on_postgres(postgres_url, tmp_path):
    url = with_password(postgres_url)
    masked = make_url(url).render_as_string(hide_password=True)
    assert SECRET in url and SECRET not in masked
    api.submit(write_spec(tmp_path, "pg-q", n=3), storage=url)

    results = hpo_many(
        ["list", "--storage", url], ["list", "--json", "--storage", url],
        ["status", "pg-q", "--storage", url], ["status", "pg-q", "--json", "--storage", url],
    )
    for result in results:
        assert SECRET not in result.stdout + result.stderr
    listed, listed_json, status, status_json = results
    assert "pg-q" in ok(listed) and "queued" in listed.stdout
    assert [row["storage"] for row in as_json(listed_json)] == [masked]
    assert masked in ok(status)
    assert as_json(status_json)["storage"] == masked
