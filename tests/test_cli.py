"""The installed `hpo` console script, run as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from conftest import REPO, TESTS_DIR
from serves import write_spec
from shell import HPO, SECRET, assert_one_line_error, hpo, with_password

EXAMPLE = REPO / "examples" / "digits-mlp.yaml"
@pytest.mark.parametrize("backend", ["ray", "local"])
def test_no_database_password_reaches_a_worker(postgres_url, tmp_path, backend):
    """HPO_STORAGE as the README's service mode sets it: the trials (and Ray's processes, which
    they inherit from; or the local worker processes) never see the password, in their
    environment or on a command line."""
    dump = tmp_path / "seen.txt"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: env\nobjective: objectives:dump_environment\nobjective_args: {{path: {dump}}}\n"
                    f"search_space: {{x: {{type: float, low: 0, high: 1}}}}\nn_trials: 1\n")
    shutil.copy(TESTS_DIR / "objectives.py", tmp_path / "objectives.py")
    env = {**os.environ, "HPO_STORAGE": with_password(postgres_url), "PGPASSWORD": SECRET}
    result = subprocess.run([HPO, "run", str(spec), "--backend", backend], capture_output=True, text=True,
                            timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    seen = dump.read_text()
    argv = seen.splitlines()[-1]
    assert "HOME=" in seen  # it did dump a worker's environment and argv
    assert ("ray" in argv.lower()) if backend == "ray" else ("workers.local_worker" in argv)
    assert SECRET not in seen and SECRET not in result.stdout + result.stderr


def test_a_ray_address_that_does_not_answer_is_one_line_at_once(tmp_path):
    import socket

    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    db = tmp_path / "store.db"
    result = hpo("run", str(spec), "--storage", f"sqlite:///{db}", "--ray-address", f"127.0.0.1:{port}", timeout=60)
    assert_one_line_error(result, f"cannot reach Ray at 127.0.0.1:{port}: Connection refused")
    assert not db.exists()


def test_version():
    result = hpo("--version")
    assert result.returncode == 0 and result.stdout.strip() == "hpo, version 0.1.0"


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["status", "nowhere"], 2)])
def test_the_entry_point_exits_with_exit_handlers_run_and_output_flushed(tmp_path, args, code):
    """The console script skips the garbage collector's walks at teardown (gc.freeze), not the
    teardown: exit handlers (logging, Ray, temporary files) still run, and output written but
    not yet flushed still arrives, on success and on an error exit alike."""
    marker = tmp_path / "atexit-ran"
    probe = ("import atexit, pathlib, sys\n"
             f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n"
             "sys.stdout = open(sys.stdout.fileno(), 'w', buffering=1 << 20, closefd=False)\n"
             "print('buffered line')\n"
             "from hpo.cli import main\n"
             "sys.argv = ['hpo', *sys.argv[1:]]\n"
             "main()\n")
    env = {**os.environ, "HPO_STORAGE": f"sqlite:///{tmp_path / 'none.db'}"}
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == code, result.stderr
    assert result.stdout.startswith("buffered line\n")
    assert marker.read_text() == "ran"


def test_run_example_with_progress_on_sqlite(tmp_path):
    result = hpo("run", str(EXAMPLE), "--n-trials", "6", "--storage", f"sqlite:///{tmp_path}/cli.db")
    assert result.returncode == 0, result.stderr
    assert "digits-mlp" in result.stdout and "6/6" in result.stdout  # progress bar reached the budget
    assert "best (maximize)" in result.stdout  # summary table
    study = optuna.load_study(study_name="digits-mlp", storage=f"sqlite:///{tmp_path}/cli.db")
    finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == 6


def test_three_hpo_runs_started_at_once_on_one_new_sqlite_file_each_finish_exactly(tmp_path):
    """The embedded default shared by parallel runs, as a user starts them (`hpo run ... &` three
    times): all three create the store's tables at once, then write their studies side by side."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("objective: builtin:branin\nsearch_space: branin\nn_trials: 30\nmax_concurrent_trials: 2\n"
                    "pruner: {name: none}\n")
    url = f"sqlite:///{tmp_path}/shared.db"
    env = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}
    procs = [subprocess.Popen([HPO, "run", str(spec), "--storage", url, "--name", f"par-{i}", "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        summary = json.loads(out)
        assert summary["state"] == "COMPLETED" and summary["complete"] == 30 and summary["failed"] == 0
    for i in range(3):
        trials = optuna.load_study(study_name=f"par-{i}", storage=url).trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 30


def test_run_json_on_postgres_never_shows_the_password(postgres_url, tmp_path):
    # The server trusts local connections, so any password works and must still be masked.
    url = with_password(postgres_url)
    spec = write_spec(tmp_path, "cli-pg", n=4)  # what is shown does not depend on the objective
    result = hpo("run", str(spec), "--json", "--storage", url)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["storage"] == make_url(url).render_as_string(hide_password=True)
    assert summary["complete"] + summary["pruned"] == 4 and summary["state"] == "COMPLETED"
    best = optuna.load_study(study_name="cli-pg", storage=postgres_url).best_trial
    assert summary["best_value"] == best.value and summary["best_trial"] == best.number


def test_db_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path}/up.db"
    result = hpo("db", "upgrade", "--storage", url)
    assert result.returncode == 0, result.stderr
    assert "newest schema" in result.stdout
    engine = sa.create_engine(url)
    assert "hpo_jobs" in sa.inspect(engine).get_table_names()
    engine.dispose()


SPEC = """\
name: bad
objective: builtin:mlp
search_space: {lr: {type: float, low: 0.001, high: 0.1, log: true}}
n_trials: 2
"""

BAD_SPECS = {
    "malformed-yaml": ("name: [unclosed\n", "malformed YAML"),
    "unknown-key": (SPEC + "n_trails: 3\n", "field 'n_trails': unknown key"),
    "unknown-sampler": (SPEC + "sampler: simulated_annealing\n", "unknown sampler 'simulated_annealing'"),
    "unknown-pruner": (SPEC + "pruner: {name: oracle}\n", "unknown pruner 'oracle'"),
    "low-above-high": (
        SPEC.replace("low: 0.001, high: 0.1", "low: 0.5, high: 0.1"),
        "field 'search_space.lr': low (0.5) must not be greater than high (0.1)",
    ),
    "log-low-zero": (SPEC.replace("low: 0.001", "low: 0"), "log scale needs low > 0"),
    "empty-choices": (
        SPEC.replace("{lr: {type: float, low: 0.001, high: 0.1, log: true}}", "{opt: {type: categorical, choices: []}}"),
        "choices must not be empty",
    ),
    "sampler-option-type": (SPEC + "sampler: {name: tpe, options: {n_startup_trials: ten}}\n",
                            "field 'sampler': TypeError"),
    "duplicate-key": (SPEC + "n_trials: 3\n", "key 'n_trials' is given twice"),
    "checkpoints-url": (SPEC + "checkpoints: {path: 's3://ckpts/x?endpoint=http://127.0.0.1:9'}\n",
                        "field 'checkpoints.path': 's3://ckpts/x?endpoint=http://127.0.0.1:9': unknown option 'endpoint'"),
    "objective-not-importable": (
        SPEC.replace("builtin:mlp", "no_such_pkg.train:objective"),
        "objective 'no_such_pkg.train:objective' cannot be imported: ModuleNotFoundError",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_refused_before_anything_is_written(case, tmp_path):
    text, expected = BAD_SPECS[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    db = tmp_path / "store.db"
    result = hpo("run", str(spec), "--storage", f"sqlite:///{db}", cwd=tmp_path)
    assert_one_line_error(result, expected)
    assert not db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_bad_spec_writes_nothing_to_postgres(postgres_url, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BAD_SPECS["unknown-sampler"][0])
    result = hpo("run", str(spec), "--storage", with_password(postgres_url))
    assert_one_line_error(result, "unknown sampler")
    assert SECRET not in result.stderr
    engine = sa.create_engine(postgres_url)
    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()


@pytest.mark.parametrize(
    "url, expected",
    [
        (f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:1/x?connect_timeout=3",
         "cannot connect to storage postgresql+psycopg://alice:***@127.0.0.1:1/x"),
        (f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:notaport/x", "malformed storage URL"),
        ("this is not a url", "malformed storage URL"),
        ("sqlite:////no/such/dir/hpo.db", "directory /no/such/dir does not exist"),
    ],
)
def test_bad_storage_url(url, expected, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    result = hpo("run", str(spec), "--storage", url)
    assert_one_line_error(result, expected)
    assert SECRET not in result.stderr + result.stdout
    result = hpo("db", "upgrade", "--storage", url)
    assert_one_line_error(result, expected)


def test_storage_from_environment(tmp_path):
    db = tmp_path / "env.db"
    env = {**os.environ, "HPO_STORAGE": f"sqlite:///{db}"}
    result = subprocess.run([HPO, "db", "upgrade"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert db.exists()


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_sigterm_hands_running_trials_back_like_ctrl_c(tmp_path, backend):
    """What `timeout`, systemd and Kubernetes send: trials handed back, one line, exit 143."""
    import signal
    import time

    marks = tmp_path / "marks"
    marks.mkdir()
    shutil.copy(TESTS_DIR / "objectives.py", tmp_path / "objectives.py")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: termed\nobjective: objectives:pid_writer\nobjective_args: {{workdir: {marks}, steps: 200, "
                    "delay: 0.1}\nsearch_space: {x: {type: float, low: 0, high: 1}}\nn_trials: 4\n"
                    "max_concurrent_trials: 2\nmax_failed_trials: 0\n")
    url = f"sqlite:///{tmp_path}/s.db"
    env = {k: v for k, v in os.environ.items() if k not in ("HPO_STORAGE", "HPO_BACKEND")}
    proc = subprocess.Popen([HPO, "run", str(spec), "--storage", url, "--backend", backend],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(marks.glob("*.pid"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated: running trials were handed back; run again to resume"
    assert "Traceback" not in err and "Stack" not in err
    study = optuna.load_study(study_name="termed", storage=url)
    stopped = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    requeued = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    # the two running (and the one prepared to start next) handed back, none left RUNNING; the
    # ones that had started are queued again with the same values, to resume first
    assert len(stopped) >= 2 and len(stopped) + len(requeued) == len(study.trials)
    assert len(requeued) >= 2 and all(t.user_attrs["hpo:resumes"] in {s.number for s in stopped} for t in requeued)
    states = stopped
    status = subprocess.run([HPO, "status", "termed", "--storage", url, "--json"], capture_output=True, text=True)
    summary = json.loads(status.stdout)
    assert summary["state"] == "INTERRUPTED"
    # handed back is not failed: counted apart, and no failure limit (here 0) is reached by it
    assert summary["failed"] == 0 and summary["stopped"] == len(states), summary
    if backend == "ray":
        return  # resuming is the same on both backends; checked once, on the quicker one
    spec.write_text(spec.read_text().replace("steps: 200", "steps: 2"))
    again = subprocess.run([HPO, "run", str(spec), "--storage", url, "--backend", backend, "--json"],
                           capture_output=True, text=True, env=env, timeout=240)
    resumed = json.loads(again.stdout)
    assert again.returncode == 0 and resumed["state"] == "COMPLETED", (again.stdout, again.stderr)
    assert resumed["complete"] == 4 and resumed["failed"] == 0 and resumed["stopped"] == len(states)
    again_study = optuna.load_study(study_name="termed", storage=url)
    finished = {t.user_attrs.get("hpo:resumes"): t for t in again_study.trials if t.state.name == "COMPLETE"}
    assert {t.user_attrs["hpo:resumes"] for t in requeued} <= set(finished)  # the handed-back ones ran first
    assert all(t.params == again_study.trials[n].params for n, t in finished.items() if n is not None)
