"""`hpo report`: the HTML report and PNG images of finished studies, checked against the database
and opened in a real headless browser (Debian's chromium through selenium, as in
test_dashboard.py; skipped outside CI when it is not installed).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo import api
from hpo.read.report import SLICE_PARAMS, build_figures, timeline_lanes, trial_gap, write_report

from browser import CHROMIUM, headless_chromium
from conftest import IN_CI, REPO
from shell import assert_one_line_error, embedded_data, hpo
from studies import make_spec

EXAMPLE = REPO / "examples" / "digits-mlp.yaml"
ARTIFACTS = REPO / "test-artifacts"
SO, MO = "report-mlp", "report-mo"
# kaleido renders the PNG images in a headless Chrome/Chromium; under CI there must be one.
HAVE_CHROME = CHROMIUM.exists() or bool(shutil.which("chromium") or shutil.which("google-chrome"))


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def figure(files, key):
    return next(f for f in files.report.figures if f.key == key)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two finished studies in one SQLite store, and a report of each."""
    tmp = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{tmp / 'report.db'}"
    summary = api.run(EXAMPLE, storage=url, n_trials=6, name=SO, backend="local")
    assert summary.state == "COMPLETED" and summary.complete + summary.pruned == 6, summary
    mo = make_spec(
        name=MO, objective="objectives:two_objectives", search_space={"x": {"type": "float", "low": -2, "high": 4}},
        directions=["minimize", "minimize"], metrics=["f1", "f2"], sampler="nsgaii", n_trials=8,
    )
    assert api.run(mo, storage=url, backend="local").complete == 8
    so = write_report(SO, storage=url, output_dir=tmp / "so")
    mo = write_report(MO, storage=url, output_dir=tmp / "mo", png=False)
    return SimpleNamespace(url=url, dir=tmp, so=so, mo=mo)


def test_single_objective_report_matches_the_database(reports):
    files = reports.so
    study = load(reports.url, SO)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert files.html == reports.dir / "so" / "report.html" and files.html.is_file()
    page = files.html.read_text()

    # Offline: plotly.js is inline, once; no script or stylesheet is fetched from anywhere.
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)
    assert page.count("Plotly.newPlot(") == sum(f.drawn for f in files.report.figures) >= 5

    # The headline numbers are the database's.
    assert f"Study {SO}" in page
    assert f"{len(complete) + len(pruned)} of 6 finished: {len(complete)} complete, {len(pruned)} pruned" in page
    assert f"<span id='best-value'>{study.best_value:.6g}</span>" in page
    cpu_s = sum(t.user_attrs["hpo:run"]["cpu_s"] for t in trials)
    assert cpu_s > 0
    assert f"<span id='cpu-seconds'>{cpu_s:.2f}</span>" in page
    data = embedded_data(page)
    assert data["summary"]["best_value"] == study.best_value
    assert data["summary"]["best_trial"] == study.best_trial.number
    assert data["summary"]["compute"]["cpu_s"] == pytest.approx(cpu_s, abs=1e-9)
    assert [t["number"] for t in data["trials"]] == [t.number for t in trials]
    assert [t["cpu_s"] for t in data["trials"]] == [t.user_attrs["hpo:run"]["cpu_s"] for t in trials]

    # Every section is there: a plot, or a note saying why not.
    keys = {f.key for f in files.report.figures}
    assert {"optimization-history", "intermediate-values", "parallel-coordinate", "importance-ped-anova",
            "importance-fanova", "timeline", "train-validation", "compute-cpu"} <= keys
    for fig in files.report.figures:
        assert (f'id="fig-{fig.key}"' in page) if fig.drawn else (f"id='note-{fig.key}'" in page), fig.key

    # Honest figures: each says what it rests on; slices come in groups whose labels do not
    # overlap; the values are named after the objective (not "Objective Value"); importances
    # from this few trials carry a warning.
    for fig in files.report.figures:
        if fig.drawn:
            assert f"id='basis-{fig.key}'>Rests on " in page, fig.key
    assert figure(files, "optimization-history").basis == f"{len(complete)} complete trials"
    slices = [f for f in files.report.figures if f.key.startswith("slice")]
    params = sorted({p for t in complete for p in t.params})
    assert len(slices) == -(-len(params) // SLICE_PARAMS) > 1
    assert all(fig.drawn and 1 <= len(fig.figure.data) <= SLICE_PARAMS for fig in slices)
    history = figure(files, "optimization-history").figure
    assert history.layout.yaxis.title.text == "mlp" and "Objective Value" not in page
    importance = figure(files, "importance-fanova")
    # drawn from 2 complete trials on, unless they all have one value (accuracy ties on digits)
    assert importance.drawn == (len(complete) >= 2 and len({t.value for t in complete}) > 1)
    assert not importance.drawn or any(f"only {len(complete)} complete trials" in m for m in importance.messages)
    # CPU-only study: no GPU line, energy in a unit that reads (mWh/Wh, not 1e-05 kWh)
    assert "id='gpu-seconds'" not in page and "<span id='energy'" in page
    assert re.search(r"<span id='energy'[^>]*>[0-9.]+ m?Wh</span>", page)

    # Figures plot what the database holds.
    history = figure(files, "optimization-history").figure
    assert sorted(zip(history.data[0].x, history.data[0].y)) == sorted((t.number, t.value) for t in complete)
    curves = {tr.name: list(tr.y) for tr in figure(files, "intermediate-values").figure.data}
    for t in complete + pruned:
        name = f"Trial{t.number}" + (" (pruned)" if t.state == TrialState.PRUNED else "")
        assert curves[name] == [v for _, v in sorted(t.intermediate_values.items())]
    timeline = figure(files, "timeline").figure
    assert sum(len(bar.y) for bar in timeline.data) == len(trials)
    used = [bar for bar in figure(files, "compute-cpu").figure.data if bar.name.startswith("used")]
    assert sum(sum(bar.y) for bar in used) == pytest.approx(cpu_s)

    # The overfitting signal: builtin:mlp logs train_accuracy, the study reports validation
    # accuracy; the gap at the last step is the one the worker logged itself.
    gaps = files.report.gaps
    assert gaps and [g.number for g in gaps] == [t.number for t in sorted(complete, key=lambda t: -t.value)][:5]
    for gap in gaps:
        info = study.trials[gap.number].user_attrs["hpo:run"]
        assert gap.train_metric == "train_accuracy" and gap.validation_metric == "reported value"
        assert gap.gap == pytest.approx(info["history"][str(info["last_step"])]["generalization_gap"])
        assert gap.flagged == (gap.gap > 0.05)
    assert figure(files, "train-validation").drawn

    # One PNG per drawn figure (rendered by kaleido in headless Chromium).
    if HAVE_CHROME or IN_CI:
        assert files.png_skipped is None, files.png_skipped
        assert sorted(p.name for p in files.pngs) == sorted(f"{f.key}.png" for f in files.report.figures if f.drawn)
        for png in files.pngs:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_multi_objective_report_shows_the_pareto_front(reports):
    files = reports.mo
    study = load(reports.url, MO)
    page = files.html.read_text()
    assert "Pareto front" in page and files.png_skipped == "--no-png given" and files.pngs == []
    pareto = figure(files, "pareto-front")
    assert pareto.drawn
    points = [sorted(zip(tr.x, tr.y)) for tr in pareto.figure.data]  # dominated trials, then the front
    assert sorted(tuple(t.values) for t in study.best_trials) in points
    assert sorted(p for trace in points for p in trace) == sorted(tuple(t.values) for t in study.trials)
    data = embedded_data(page)
    assert sorted(e["number"] for e in data["summary"]["pareto_front"]) == sorted(t.number for t in study.best_trials)
    # One history, parallel-coordinate, slice and PED-ANOVA plot per objective; fANOVA draws both.
    for key in ("optimization-history", "parallel-coordinate", "slice", "importance-ped-anova"):  # 1 param: 1 slice
        assert figure(files, f"{key}-f1").drawn and figure(files, f"{key}-f2").drawn, key
    assert len(figure(files, "importance-fanova").figure.data) == 2
    history = figure(files, "optimization-history-f2").figure
    assert sorted(history.data[0].y) == sorted(t.values[1] for t in study.trials)
    assert data["summary"]["compute"]["saved"]["pruned_trials"] == 0


def test_without_a_browser_the_html_is_still_written(reports, monkeypatch, tmp_path):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome"))
    files = write_report(MO, storage=reports.url, output_dir=tmp_path / "out")
    assert files.pngs == [] and files.png_skipped == f"no browser at BROWSER_PATH={tmp_path / 'no-chrome'}"
    assert files.html.is_file() and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html"]
    assert f"No PNG images: {files.png_skipped}." in files.html.read_text()


def test_report_opens_in_a_headless_browser_without_errors(reports, tmp_path):
    with headless_chromium(tmp_path, console_logs=True) as driver:
        for files, name, shot in ((reports.so, SO, "report.png"), (reports.mo, MO, "report-mo.png")):
            driver.get(files.html.as_uri())
            drawn = sum(f.drawn for f in files.report.figures)
            rendered = 0
            deadline = time.monotonic() + 30  # plots are drawn once plotly.js has run
            while time.monotonic() < deadline:
                rendered = driver.execute_script(
                    "return Array.from(document.querySelectorAll('.plotly-graph-div'))"
                    ".filter(d => d.querySelector('.main-svg') && d._fullData && d._fullData.length > 0).length")
                if rendered >= drawn:
                    break
                time.sleep(0.25)
            assert rendered == drawn, f"{name}: {rendered} of {drawn} plots rendered"
            assert name in driver.title
            # Each plot has its traces drawn, not just axes.
            empty = driver.execute_script(
                "return Array.from(document.querySelectorAll('.plotly-graph-div'))"
                ".filter(d => d.querySelectorAll('.trace, .parcoords, canvas').length == 0).map(d => d.id)")
            assert empty == [], f"{name}: plots without traces: {empty}"
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == [], errors
            ARTIFACTS.mkdir(exist_ok=True)
            size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            image = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            })
            (ARTIFACTS / shot).write_bytes(base64.b64decode(image["data"]))


def test_report_and_status_through_the_console_script(reports, tmp_path):
    result = hpo("report", SO, "--storage", reports.url, "--no-png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    default = tmp_path / f"hpo-report-{SO}" / "report.html"
    assert result.stdout.strip().startswith(f"{SO}: report written to {default} (") and default.is_file()
    assert result.stderr == ""

    result = hpo("report", "no-such-study", "--storage", reports.url, cwd=tmp_path)
    assert_one_line_error(result, "no study named 'no-such-study'")
    assert not (tmp_path / "hpo-report-no-such-study").exists()

    trials = load(reports.url, SO).get_trials()
    cpu_s = sum(t.user_attrs["hpo:run"]["cpu_s"] for t in trials)
    result = hpo("status", SO, "--storage", reports.url, "--json", "--cpu-watts", "10", "--gpu-watts", "0")
    assert result.returncode == 0, result.stderr
    compute = json.loads(result.stdout)["compute"]
    assert compute["cpu_s"] == pytest.approx(cpu_s, abs=1e-9) and compute["gpu_s"] == 0.0
    assert compute["cpu_watts"] == 10.0 and compute["kwh"] == pytest.approx(cpu_s * 10 / 3.6e6)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert compute["saved"]["pruned_trials"] == len(pruned)
    assert compute["saved"]["epochs"] == sum(12 - (t.user_attrs["hpo:run"]["last_step"] + 1) for t in pruned)

    result = hpo("status", SO, "--storage", reports.url)
    assert result.returncode == 0, result.stderr
    assert "compute" in result.stdout and "CPU-s" in result.stdout and re.search(r"[0-9.]+ m?Wh", result.stdout)
    assert "GPU" not in result.stdout  # a CPU-only study has no GPU figures
    assert "saved by pruning" in result.stdout


# -- pieces, on hand-made trials (no Ray) ----------------------------------------------------------


def _trial(number, value, train_accuracy, **attrs):
    history = {"0": {"train_accuracy": train_accuracy - 0.1}, "1": {"train_accuracy": train_accuracy, **attrs}}
    return create_trial(
        value=value, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
        intermediate_values={0: value - 0.1, 1: value},
        user_attrs={"hpo:run": {"last_step": 1, "history": history, "metrics": {}, "node": "abcdef0123"}},
    )


def test_train_validation_gap_is_flagged_above_the_threshold():
    small = trial_gap(_trial(0, 0.90, 0.93), ["maximize"], 0.05)
    large = trial_gap(_trial(1, 0.80, 0.99), ["maximize"], 0.05)
    assert (small.train, small.validation, small.flagged) == (0.93, 0.90, False)
    assert large.gap == pytest.approx(0.19) and large.flagged
    # A logged pair of losses is used for minimized studies: gap = val_loss - train_loss.
    losses = trial_gap(_trial(2, 0.3, 0.9, train_loss=0.1, val_loss=0.5), ["minimize"], 0.05)
    assert (losses.train_metric, losses.validation_metric, losses.gap) == ("train_loss", "val_loss", 0.4)
    assert trial_gap(_trial(3, 0.3, 0.9), ["minimize"], 0.05) is None  # no training loss logged


def test_timeline_packs_concurrent_trials_into_worker_slots():
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1, 12, 0, 0)
    trials = []
    for number, (start, end) in enumerate([(0, 10), (1, 4), (5, 8), (9, 12)]):
        trial = _trial(number, 0.5, 0.5)
        trial.number = number
        trial.datetime_start, trial.datetime_complete = t0 + timedelta(seconds=start), t0 + timedelta(seconds=end)
        trials.append(trial)
    lanes = {t.number: lane for t, lane, _ in timeline_lanes(trials, now=t0)}
    # a node without a recorded host keeps its id's prefix
    assert lanes == {0: "abcdef0123 / slot 1", 1: "abcdef0123 / slot 2", 2: "abcdef0123 / slot 2",
                     3: "abcdef0123 / slot 2"}


def test_nodes_are_named_by_host_and_told_apart_when_they_share_one():
    from hpo.read.accounting import node_labels

    def on(node, host):
        trial = _trial(0, 0.5, 0.5)
        trial.user_attrs["hpo:run"].update(node=node, host=host)
        return trial

    assert node_labels([on("aaaa11", "10.0.0.5"), on("bbbb22", "10.0.0.6")]) == {
        "aaaa11": "10.0.0.5", "bbbb22": "10.0.0.6"}
    # two Ray nodes started on one machine (as in the loopback cluster test)
    assert node_labels([on("aaaa11", "127.0.0.1"), on("bbbb22", "127.0.0.1"), on("aaaa11", "127.0.0.1")]) == {
        "aaaa11": "127.0.0.1#aaaa11", "bbbb22": "127.0.0.1#bbbb22"}


# two parameters in [0, 1]: as Optuna distributions for create_trial, and as a spec's space
AB_DISTRIBUTIONS = {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}
AB_SPACE = {"a": {"type": "float", "low": 0, "high": 1}, "b": {"type": "float", "low": 0, "high": 1}}


def test_importance_from_few_trials_is_flagged_and_says_what_it_rests_on():
    study = optuna.create_study()
    for a, b in ((0.1, 0.9), (0.5, 0.2), (0.8, 0.4), (0.3, 0.3)):
        study.add_trial(create_trial(value=a + 2 * b, params={"a": a, "b": b}, distributions=AB_DISTRIBUTIONS))
    spec = make_spec(name="few", search_space=AB_SPACE)
    figs = {f.key: f for f in build_figures(spec, study, study.get_trials(), [])}
    for key in ("importance-ped-anova", "importance-fanova"):
        assert figs[key].drawn and figs[key].basis == "4 complete trials"
        assert figs[key].messages[0].startswith("only 4 complete trials (fewer than 10)")
    assert figs["slice"].drawn and figs["optimization-history"].figure.layout.yaxis.title.text == "objectives:curve"


def test_importance_of_identical_values_is_a_note_not_a_figure():
    """fANOVA raises on values without variance and PED-ANOVA splits the importance evenly: both
    say instead that there is nothing to attribute (for each objective that is flat)."""
    points = ((0.1, 0.9), (0.5, 0.2), (0.8, 0.4))
    single = optuna.create_study(direction="maximize")
    for a, b in points:
        single.add_trial(create_trial(value=0.986111, params={"a": a, "b": b}, distributions=AB_DISTRIBUTIONS))
    spec = make_spec(name="flat", search_space=AB_SPACE)
    figs = {f.key: f for f in build_figures(spec, single, single.get_trials(), [])}
    for key in ("importance-ped-anova", "importance-fanova"):
        assert not figs[key].drawn
        assert figs[key].note == "all 3 complete trials have the same objectives:curve (0.986111): no importance to attribute"
    assert figs["slice"].drawn

    multi = optuna.create_study(directions=["minimize", "minimize"])
    for a, b in points:
        multi.add_trial(create_trial(values=[1.0, a + b], params={"a": a, "b": b}, distributions=AB_DISTRIBUTIONS))
    spec = make_spec(name="flat-mo", search_space=AB_SPACE, directions=["minimize", "minimize"], metrics=["f1", "f2"])
    figs = {f.key: f for f in build_figures(spec, multi, multi.get_trials(), [])}
    assert figs["importance-ped-anova-f1"].note.startswith("all 3 complete trials have the same f1 (1)")
    assert figs["importance-ped-anova-f2"].drawn
    assert figs["importance-fanova"].note == figs["importance-ped-anova-f1"].note
