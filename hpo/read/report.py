"""`hpo report NAME`: one self-contained HTML file with the study's plots, plus PNG images.

Everything is read back from the store, like the rest of the read side (hpo.read.queries):

* the summary (`hpo status`), with compute used and saved by pruning (hpo.read.accounting);
* Optuna's own plots: optimization history, intermediate values (pruned trials dotted), parallel
  coordinates, slices, hyperparameter importance (PED-ANOVA and fANOVA), the Pareto front of a
  multi-objective study; and hpo's own: a timeline of trials per worker, compute per trial, and
  the train/validation curves of the best trials with their gap (an overfitting signal).

The HTML embeds plotly.js once, in its head, so it opens offline; a plot that cannot be drawn
(too few trials, say) is replaced by a one-line note. The same figures are written as PNG files
with kaleido, which drives a headless Chrome/Chromium (found on PATH, at /usr/bin/chromium, or
at ``BROWSER_PATH``); without one the HTML is still written and the PNGs are reported skipped.
A JSON copy of the report's numbers is embedded too (``<script id="hpo-report-data">``).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from hpo.read import schedule_figures
from hpo.read.accounting import (
    epochs_trained,
    full_epochs,
    human_compute,
    human_energy,
    node_labels,
    pruning_saving,
    run_info,
    trial_cpu_s,
    trial_gpu_s,
)
from hpo.read.queries import StudySummary, get_job, load_study, summarize
from hpo.spec.study import StudySpec
from hpo.store.attrs import PBT_ATTR
from hpo.store.database import Store

DEFAULT_GAP_THRESHOLD = 0.05
TOP_TRIALS = 5  # best trials whose train/validation gap is shown
FEW_FOR_IMPORTANCE = 10  # below this many complete trials, importances come with a caveat
WIDTH, HEIGHT = 1100, 520  # of every figure, in the page and in the PNG files
STATE_COLORS = {
    "COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#7f7f7f", "WAITING": "#bcbd22",
}
DATA_ID = "hpo-report-data"


# -- the pieces ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One plot of the report, or the note saying why it is not drawn."""

    key: str  # file stem of its PNG, and the id of its div
    section: str
    title: str
    figure: Any = None  # plotly.graph_objects.Figure
    note: str | None = None
    messages: list[str] = field(default_factory=list)  # what Optuna warned about while drawing
    basis: str | None = None  # what the figure rests on, e.g. "7 complete trials"

    @property
    def drawn(self) -> bool:
        return self.figure is not None


@dataclass
class Gap:
    """The train/validation gap of one of the best trials at its final step."""

    number: int
    step: int | None
    train_metric: str
    train: float
    validation_metric: str
    validation: float
    gap: float  # positive: training looks better than validation
    flagged: bool


@dataclass
class StudyReport:
    summary: StudySummary
    spec: StudySpec
    study: optuna.Study
    trials: list[FrozenTrial]
    gaps: list[Gap]
    gap_threshold: float
    gap_note: str | None
    figures: list[Figure]
    generated_at: datetime

    def data(self) -> dict[str, Any]:
        """The report's numbers as plain data (embedded in the HTML as JSON)."""
        return {
            "study_name": self.summary.study_name,
            "summary": self.summary.to_dict(),
            "overfitting": {
                "threshold": self.gap_threshold,
                "note": self.gap_note,
                "trials": [vars(g) for g in self.gaps],
            },
            "figures": [
                {"key": f.key, "section": f.section, "title": f.title, "drawn": f.drawn, "note": f.note,
                 "basis": f.basis}
                for f in self.figures
            ],
            "trials": [_trial_data(t, node_labels(self.trials)) for t in self.trials],
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
        }


@dataclass
class ReportFiles:
    html: Path
    pngs: list[Path]
    png_skipped: str | None  # why no PNG was written, if none was
    report: StudyReport


def _trial_data(trial: FrozenTrial, nodes: Mapping[str, str] | None = None) -> dict[str, Any]:
    info = run_info(trial)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "params": trial.params,
        "epochs": epochs_trained(trial),
        "cpu_s": trial_cpu_s(trial),
        "gpu_s": trial_gpu_s(trial),
        "duration_s": info.get("duration_s"),
        "node": (nodes or {}).get(str(info.get("node") or ""), info.get("host") or info.get("node")),
        "device": info.get("device"),
    }


# -- overfitting ---------------------------------------------------------------------------------


def best_trials(study: optuna.Study, trials: Sequence[FrozenTrial], top: int = TOP_TRIALS) -> list[FrozenTrial]:
    """The best complete trials: by value for one objective, the Pareto front for several."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.number)[:top]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    maximize = study.direction == StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: (-t.value if maximize else t.value, t.number))[:top]


def final_metrics(trial: FrozenTrial) -> tuple[int | None, Mapping[str, float]]:
    """The trial's last step and the metrics it logged for that step (its latest ones if it has no
    per-step history)."""
    info = run_info(trial)
    step = info.get("last_step")
    if not isinstance(step, int) and trial.intermediate_values:
        step = max(trial.intermediate_values)
    history = info.get("history") or {}
    logged = history.get(str(step)) if step is not None else None
    return step, (logged if isinstance(logged, Mapping) else info.get("metrics") or {})


def trial_gap(trial: FrozenTrial, directions: Sequence[str], threshold: float) -> Gap | None:
    """Training metric vs validation at the final step, or None when the workload logs none.

    Logged pairs come first (``train_accuracy``/``val_accuracy``, ``train_loss``/``val_loss``).
    A single-objective study's reported value is the validation value otherwise: compared with
    ``train_accuracy`` when it maximizes, with ``train_loss`` when it minimizes.
    """
    step, logged = final_metrics(trial)
    reported = trial.intermediate_values.get(step) if step is not None else None
    if reported is None and len(directions) == 1:
        reported = trial.value
    single = len(directions) == 1
    # (train metric, validation metric or None for the reported value, higher is better)
    candidates: list[tuple[str, str | None, bool]] = []
    if not single or directions[0] == "maximize":
        candidates.append(("train_accuracy", "val_accuracy", True))
        if single:
            candidates.append(("train_accuracy", None, True))
    if not single or directions[0] == "minimize":
        candidates.append(("train_loss", "val_loss", False))
        if single:
            candidates.append(("train_loss", None, False))
    for train_name, val_name, higher_better in candidates:
        train = _finite(logged.get(train_name))
        validation = _finite(logged.get(val_name) if val_name else reported)
        if train is None or validation is None:
            continue
        gap = train - validation if higher_better else validation - train
        return Gap(
            number=trial.number, step=step, train_metric=train_name, train=train,
            validation_metric=val_name or "reported value", validation=validation, gap=gap,
            flagged=gap > threshold,
        )
    return None


def overfitting(
    study: optuna.Study, trials: Sequence[FrozenTrial], threshold: float = DEFAULT_GAP_THRESHOLD,
    top: int = TOP_TRIALS,
) -> tuple[list[Gap], str | None]:
    """The gaps of the best trials, and a note when there is nothing to show."""
    directions = [d.name.lower() for d in study.directions]
    best = best_trials(study, trials, top)
    if not best:
        return [], "no complete trial yet"
    gaps = [g for g in (trial_gap(t, directions, threshold) for t in best) if g is not None]
    if not gaps:
        return [], ("the workload logs no training metric (train_accuracy or train_loss) next to "
                    "its validation value, so there is no train/validation gap to show")
    return gaps, None


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# -- figures -------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "value"


def _objective_names(spec: StudySpec, study: optuna.Study) -> list[str]:
    """What the plots call the objective's values: the spec's metric names, else the objective's
    own name (``mlp``, ``train:objective``), never Optuna's "Objective 0"."""
    names = spec.metrics or study.metric_names
    if names:
        return list(names)
    name = spec.objective.removeprefix("builtin:")
    if len(study.directions) == 1:
        return [name]
    return [f"{name} [{i}]" for i in range(len(study.directions))]


SLICE_PARAMS = 4  # parameters per slice figure: more and Optuna's subplot labels overlap


def _draw(fig: Figure, needs: str | None, build: Callable[[], Any]) -> Figure:
    """Build ``fig.figure`` unless ``needs`` says what is missing; errors become notes."""
    if needs:
        fig.note = needs
        return fig
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            figure = build()
        except Exception as exc:  # a plot that cannot be drawn must not cost the whole report
            fig.note = f"could not be drawn: {type(exc).__name__}: {_first_line(exc)}"
            return fig
    fig.messages = sorted({"Optuna: " + _first_line(w.message) for w in caught
                           if not issubclass(w.category, (optuna.exceptions.ExperimentalWarning, DeprecationWarning))})
    if figure is None or not figure.data:
        fig.note = "nothing to plot"
        return fig
    figure.update_layout(title=fig.title, width=None, height=HEIGHT, template="plotly_white",
                         margin=dict(l=60, r=30, t=60, b=50))
    fig.figure = figure
    return fig


def _flat(complete: Sequence[FrozenTrial], index: int, name: str) -> str | None:
    """A note when every complete trial has the same value of objective ``index``."""
    values = {t.values[index] for t in complete if t.values is not None}
    if len(values) != 1:
        return None
    return f"all {len(complete)} complete trials have the same {name} ({values.pop():.6g}): no importance to attribute"


def _first_line(exc: Any) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def build_figures(spec: StudySpec, study: optuna.Study, trials: list[FrozenTrial], gaps: list[Gap]) -> list[Figure]:
    from optuna import visualization as vis
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    names = _objective_names(spec, study)
    multi = len(study.directions) > 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    few = None if complete else "no complete trial yet"
    two = None if len(complete) >= 2 else f"needs at least 2 complete trials ({len(complete)} so far)"
    objectives: list[tuple[str, str, Callable | None]] = (
        [(f"-{_slug(n)}", f" of {n}", (lambda t, i=i: t.values[i])) for i, n in enumerate(names)]
        if multi else [("", "", None)]
    )
    figs: list[Figure] = []

    def target_args(target, name):
        return {"target_name": name} if target is None else {"target": target, "target_name": name}

    for (suffix, of, target), name in zip(objectives, names):
        figs.append(_draw(Figure(f"optimization-history{suffix}", "Optimization history", f"Optimization history{of}"),
                          few, lambda: vis.plot_optimization_history(study, **target_args(target, name))))
    with_curves = [t for t in trials if t.intermediate_values and t.state != TrialState.FAIL]
    figs.append(_draw(
        Figure("intermediate-values", "Intermediate values", "Intermediate values (pruned trials dotted)"),
        None if with_curves else "no trial reported intermediate values",
        lambda: _mark_pruned(vis.plot_intermediate_values(study), trials),
    ))
    for (suffix, of, target), name in zip(objectives, names):
        figs.append(_draw(Figure(f"parallel-coordinate{suffix}", "Parallel coordinates", f"Parallel coordinates{of}"),
                          two, lambda: vis.plot_parallel_coordinate(study, **target_args(target, name))))
    params = sorted({p for t in complete for p in t.params})
    groups = [params[i:i + SLICE_PARAMS] for i in range(0, len(params), SLICE_PARAMS)] or [None]
    for (suffix, of, target), name in zip(objectives, names):
        for part, group in enumerate(groups, 1):
            key, title = f"slice{suffix}", f"Slices{of}"
            if len(groups) > 1:
                key, title = f"{key}-{part}", f"{title} ({part} of {len(groups)}: {', '.join(group)})"
            figs.append(_draw(Figure(key, "Slices", title), few,
                              lambda group=group, target=target, name=name: vis.plot_slice(
                                  study, params=group, **target_args(target, name))))

    # Importance. PED-ANOVA takes lower as better for an explicit target, so a maximized
    # objective is negated; fANOVA (variance based) draws all objectives in one figure.
    directions = [d.name.lower() for d in study.directions]
    # Identical values leave nothing to attribute: fANOVA raises on them and PED-ANOVA splits
    # the importance evenly, which would read as a finding.
    flat = [two or _flat(complete, i, name) for i, name in enumerate(names)]
    for (suffix, of, target), name, direction, needs in zip(objectives, names, directions, flat):
        ped_target = None if target is None else (
            target if direction == "minimize" else (lambda t, f=target: -f(t)))
        figs.append(_draw(
            Figure(f"importance-ped-anova{suffix}", "Hyperparameter importance", f"Importance (PED-ANOVA){of}"),
            needs, lambda: vis.plot_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(), **target_args(ped_target, name)),
        ))
    figs.append(_draw(
        Figure("importance-fanova", "Hyperparameter importance", "Importance (fANOVA)"),
        next((needs for needs in flat if needs), None),
        lambda: vis.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=spec.seed or 0),
                                           **({} if multi else {"target_name": names[0]})),
    ))
    if 2 <= len(complete) < FEW_FOR_IMPORTANCE:
        for fig in figs:
            if fig.section == "Hyperparameter importance" and fig.drawn:
                fig.messages.insert(0, f"only {len(complete)} complete trials (fewer than {FEW_FOR_IMPORTANCE}): "
                                       "importances this early are a rough hint, not a finding, and the two "
                                       "methods may disagree")
    if multi:
        figs.append(_draw(
            Figure("pareto-front", "Pareto front", "Pareto front"),
            few or (None if len(names) <= 3 else f"Optuna draws Pareto fronts of 2 or 3 objectives, not {len(names)}"),
            lambda: vis.plot_pareto_front(study, target_names=names),
        ))
    if any(PBT_ATTR in t.user_attrs for t in trials):
        pbt_done = schedule_figures.segments(trials)
        figs.append(_draw(Figure("pbt-lineage", "Population", "Population lineage (dotted: copied a better member)"),
                          None if pbt_done else "no segment finished yet",
                          lambda: schedule_figures.lineage_figure(trials)))
        best = study.best_trial if complete and not multi else None
        figs.append(_draw(Figure("pbt-schedule", "Population", "The best member's schedule (values per step)"),
                          None if best is not None and PBT_ATTR in best.user_attrs else "no best member yet",
                          lambda: schedule_figures.schedule_figure(trials, best)))
    figs.append(_draw(Figure("train-validation", "Overfitting",
                             "Train (dashed) vs validation (solid) of the best trials"),
                      None if gaps else "no best trial logged a training metric next to its validation value",
                      lambda: train_validation_figure(trials, gaps)))
    started = [t for t in trials if t.datetime_start is not None]
    figs.append(_draw(Figure("timeline", "Timeline", "Trials per worker"),
                      None if started else "no trial started yet", lambda: timeline_figure(trials)))
    figs.append(_draw(Figure("compute-cpu", "Compute", "CPU-seconds per trial (used, and saved by pruning)"),
                      None if trials else "no trial yet", lambda: compute_figure(spec, trials, "cpu")))
    if any(trial_gpu_s(t) for t in trials):
        figs.append(_draw(Figure("compute-gpu", "Compute", "GPU-seconds per trial (used, and saved by pruning)"),
                          None, lambda: compute_figure(spec, trials, "gpu")))
    measured = sum(1 for t in trials if run_info(t))
    basis = {"intermediate-values": f"{len(with_curves)} trials with learning curves",
             "train-validation": f"the {len(gaps)} best trials that logged a training metric",
             "timeline": f"{measured} trials that ran",
             "pbt-lineage": f"{sum(PBT_ATTR in t.user_attrs for t in complete)} finished segments",
             "pbt-schedule": "the best member's segments", "compute-cpu": f"{measured} trials that ran",
             "compute-gpu": f"{measured} trials that ran"}
    for fig in figs:  # every figure says how many trials it rests on
        fig.basis = basis.get(fig.key, f"{len(complete)} complete trials")
    return figs


def _mark_pruned(figure, trials: Iterable[FrozenTrial]):
    """Optuna's intermediate-values plot with pruned trials dotted and named as such."""
    states = {f"Trial{t.number}": t.state for t in trials}
    for trace in figure.data:
        if states.get(trace.name) == TrialState.PRUNED:
            trace.update(line=dict(dash="dot", width=1.5), opacity=0.8, name=f"{trace.name} (pruned)")
    figure.update_layout(showlegend=True)
    return figure


def train_validation_figure(trials: Sequence[FrozenTrial], gaps: Sequence[Gap]):
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    by_number = {t.number: t for t in trials}
    figure = go.Figure()
    for i, gap in enumerate(gaps):
        trial = by_number[gap.number]
        history = run_info(trial).get("history") or {}
        steps = sorted(int(s) for s in history)
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        train = [(s, history[str(s)].get(gap.train_metric)) for s in steps]
        if gap.validation_metric == "reported value":
            val = sorted(trial.intermediate_values.items())
        else:
            val = [(s, history[str(s)].get(gap.validation_metric)) for s in steps]
        label = f"trial {gap.number}" + (" (large gap)" if gap.flagged else "")
        figure.add_trace(go.Scatter(x=[s for s, v in train if v is not None], y=[v for _, v in train if v is not None],
                                    mode="lines", line=dict(color=color, dash="dash"),
                                    name=f"{label}: {gap.train_metric}"))
        figure.add_trace(go.Scatter(x=[s for s, v in val if v is not None], y=[v for _, v in val if v is not None],
                                    mode="lines+markers", line=dict(color=color),
                                    name=f"{label}: {gap.validation_metric}"))
    figure.update_layout(xaxis_title="Step", yaxis_title="Value")
    return figure


def timeline_lanes(trials: Iterable[FrozenTrial], now: datetime) -> list[tuple[FrozenTrial, str, datetime]]:
    """Each started trial with its worker lane ("10.0.0.5 / slot 2") and end time.

    A node's trials are packed greedily into slots: a trial takes the first slot free when it
    started, so the slots of a node are its concurrently busy workers. Nodes are named by host
    (IP or name; see accounting.node_labels).
    """
    trials = list(trials)
    names = node_labels(trials)
    lanes: dict[str, list[datetime]] = {}
    placed = []
    for trial in sorted((t for t in trials if t.datetime_start), key=lambda t: (t.datetime_start, t.number)):
        node_id = str(run_info(trial).get("node") or "")
        node = names.get(node_id) or ("running" if trial.state == TrialState.RUNNING else "?")
        end = trial.datetime_complete or now
        ends = lanes.setdefault(node, [])
        slot = next((i for i, busy_until in enumerate(ends) if busy_until <= trial.datetime_start), len(ends))
        if slot == len(ends):
            ends.append(end)
        else:
            ends[slot] = end
        placed.append((trial, f"{node} / slot {slot + 1}", end))
    return placed


def timeline_figure(trials: Sequence[FrozenTrial], now: datetime | None = None):
    import plotly.graph_objects as go

    placed = timeline_lanes(trials, now or datetime.now())
    figure = go.Figure()
    for state in TrialState:
        rows = [(t, lane, end) for t, lane, end in placed if t.state == state]
        if not rows:
            continue
        figure.add_trace(go.Bar(
            orientation="h",
            y=[lane for _, lane, _ in rows],
            base=[t.datetime_start.isoformat() for t, _, _ in rows],
            x=[(end - t.datetime_start).total_seconds() * 1000 for t, _, end in rows],
            name=state.name.lower(),
            marker_color=STATE_COLORS.get(state.name, "#999999"),
            customdata=[[t.number, (end - t.datetime_start).total_seconds(), trial_cpu_s(t)] for t, _, end in rows],
            hovertemplate=("trial %{customdata[0]}<br>%{customdata[1]:.1f} s, %{customdata[2]:.1f} CPU-s"
                           "<extra>%{fullData.name}</extra>"),
        ))
    lanes = sorted({lane for _, lane, _ in placed})
    figure.update_layout(
        barmode="overlay", xaxis=dict(type="date", title="time"),
        yaxis=dict(title="worker", categoryorder="array", categoryarray=lanes[::-1]),
    )
    return figure


def compute_figure(spec: StudySpec, trials: Sequence[FrozenTrial], kind: str):
    import plotly.graph_objects as go

    measure = trial_cpu_s if kind == "cpu" else trial_gpu_s
    unit = "CPU-seconds" if kind == "cpu" else "GPU-seconds"
    full = full_epochs(trials, spec.objective_args)
    figure = go.Figure()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        rows = [t for t in trials if t.state == state and run_info(t)]
        if rows:
            figure.add_trace(go.Bar(x=[t.number for t in rows], y=[measure(t) for t in rows],
                                    name=f"used ({state.name.lower()})", marker_color=STATE_COLORS[state.name]))
    savings = [s for s in (pruning_saving(t, full) for t in trials) if s is not None and s.epochs_saved]
    if savings:
        figure.add_trace(go.Bar(
            x=[s.number for s in savings], y=[s.cpu_s if kind == "cpu" else s.gpu_s for s in savings],
            name="saved by pruning (estimate)", marker=dict(color="rgba(255,127,14,0.25)", line=dict(color="#ff7f0e")),
        ))
    figure.update_layout(barmode="stack", xaxis_title="trial", yaxis_title=unit)
    return figure


# -- building and writing ------------------------------------------------------------------------


def build_report(
    store: Store, name: str, *, cpu_watts: float | None = None, gpu_watts: float | None = None,
    gap_threshold: float = DEFAULT_GAP_THRESHOLD,
) -> StudyReport:
    job = get_job(store, name)
    summary = summarize(store, job, cpu_watts=cpu_watts, gpu_watts=gpu_watts)
    spec = StudySpec.from_json(job.spec)
    study = load_study(store, name)
    trials = study.get_trials(deepcopy=False)
    gaps, note = overfitting(study, trials, gap_threshold)
    return StudyReport(
        summary=summary, spec=spec, study=study, trials=trials, gaps=gaps, gap_threshold=gap_threshold,
        gap_note=note, figures=build_figures(spec, study, trials, gaps), generated_at=datetime.now(),
    )


def write_report(
    name: str,
    *,
    storage: str | None = None,
    output_dir: str | Path | None = None,
    cpu_watts: float | None = None,
    gpu_watts: float | None = None,
    gap_threshold: float = DEFAULT_GAP_THRESHOLD,
    png: bool = True,
) -> ReportFiles:
    """Write ``report.html`` and one PNG per figure into ``output_dir`` (default
    ``./hpo-report-<name>/``)."""
    if not (isinstance(gap_threshold, (int, float)) and math.isfinite(gap_threshold) and gap_threshold >= 0):
        raise HpoError(f"gap threshold must be a finite number >= 0, got {gap_threshold!r}")
    store = Store(storage)
    try:
        store.check()
        rep = build_report(store, name, cpu_watts=cpu_watts, gpu_watts=gpu_watts, gap_threshold=gap_threshold)
    finally:
        store.dispose()
    out = Path(output_dir) if output_dir is not None else Path.cwd() / f"hpo-report-{name}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HpoError(f"cannot create report folder {out}: {exc.strerror or exc}") from None
    pngs, skipped = write_pngs(rep.figures, out) if png else ([], "--no-png given")
    page = out / "report.html"
    try:
        page.write_text(render_html(rep, pngs, skipped), encoding="utf-8")
    except OSError as exc:
        raise HpoError(f"cannot write {page}: {exc.strerror or exc}") from None
    return ReportFiles(html=page, pngs=pngs, png_skipped=skipped, report=rep)


def write_pngs(figures: Sequence[Figure], out: Path, timeout_s: float = 60.0) -> tuple[list[Path], str | None]:
    """One PNG per drawn figure, rendered by kaleido in one headless Chromium session."""
    drawn = [f for f in figures if f.drawn]
    if not drawn:
        return [], None
    try:
        import kaleido
    except ImportError:
        return [], "kaleido is not installed (pip install 'kaleido>=1')"
    paths = [out / f"{f.key}.png" for f in drawn]
    specs = [
        {"fig": json.loads(f.figure.to_json()), "path": path,
         "opts": {"format": "png", "width": WIDTH, "height": HEIGHT, "scale": 1}}
        for f, path in zip(drawn, paths)
    ]
    for path in paths:
        path.unlink(missing_ok=True)
    try:
        # mathjax=False: nothing is fetched from a CDN (plotly.js comes from the plotly package).
        kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False, "timeout": timeout_s})
    except Exception as exc:  # no Chrome, a crash: the HTML report is still complete
        if type(exc).__name__ == "ChromeNotFoundError":
            where = os.environ.get("BROWSER_PATH")
            reason = (f"no browser at BROWSER_PATH={where}" if where else
                      "no Chrome or Chromium found (install one, e.g. Debian's chromium, or set BROWSER_PATH)")
        else:
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
        return [p for p in paths if p.exists()], reason
    written = [p for p in paths if p.exists()]
    return written, None if len(written) == len(paths) else f"{len(paths) - len(written)} images were not rendered"


# -- HTML ----------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None, cls: str = "") -> str:
    head = "" if header is None else "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"
    body = []
    for row in rows:
        css = ""
        if isinstance(row, tuple) and len(row) == 2 and isinstance(row[1], dict):
            row, css = row[0], row[1].get("class", "")
        body.append(f'<tr class="{css}">' + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f'<table class="{cls}">{head}{"".join(body)}</table>'


def _params(params: Mapping[str, Any]) -> str:
    return " ".join(f"{_esc(k)}={_esc(_fmt(v))}" for k, v in params.items())


def _summary_html(rep: StudyReport) -> str:
    s, spec = rep.summary, rep.spec
    names = _objective_names(spec, rep.study)
    rows = [
        ("state", _esc(s.state.lower()) + (f" ({_esc(s.message)})" if s.message else "")),
        ("objective", _esc(spec.objective)),
        ("direction", _esc(", ".join(f"{n}: {d}" for n, d in zip(names, s.directions)) if s.metrics
                           else ", ".join(s.directions))),
        ("sampler / pruner", _esc(f"{spec.sampler.name} / {spec.pruner.name}")),
        ("trials", f'<span id="trial-counts">{s.complete + s.pruned}{f" of {s.n_trials}" if s.n_trials else ""} '
                   f"finished: {s.complete} complete, {s.pruned} pruned; {s.failed} failed, "
                   f"{s.running} running" + (f", {s.stopped} stopped (cancelled or handed back)" if s.stopped else "")
                   + "</span>"),
        ("elapsed", "-" if s.elapsed_s is None else f"{s.elapsed_s:.1f} s"),
        ("storage", _esc(s.storage)),
    ]
    if s.infeasible:
        rows.append(("infeasible", f"{s.infeasible} complete trials violate constraints"))
    html_ = _table(rows, cls="kv")
    if s.pareto_front is not None:
        front = [(str(e["number"]), *(_fmt(v) for v in e["values"]), _params(e["params"])) for e in s.pareto_front]
        html_ += f"<h3>Pareto front: {len(front)} trials</h3>" + _table(
            front, ["trial", *(f"{n} ({d})" for n, d in zip(names, s.directions)), "params"], cls="grid")
    elif s.best_trial is None:
        html_ += "<p class='note'>No completed (feasible) trial yet.</p>"
    else:
        html_ += (f"<h3>Best trial {s.best_trial}: <span id='best-value'>{_fmt(s.best_value)}</span> "
                  f"({_esc(s.directions[0])})</h3>")
        params = [(_esc(k), _esc(_fmt(v))) for k, v in (s.best_params or {}).items()]
        html_ += _table(params, ["param", "value"], cls="grid")
    return html_


def _compute_html(rep: StudyReport) -> str:
    c = rep.summary.compute or {}
    if not c:
        return "<p class='note'>No compute recorded.</p>"
    saved = c["saved"]
    total_cpu = c["cpu_s"] + saved["cpu_s"]
    share = f"{100 * saved['cpu_s'] / total_cpu:.1f}%" if total_cpu else "-"
    by_state = {}
    for t in rep.trials:
        if run_info(t) and t.state.is_finished():
            by_state[t.state.name.lower()] = by_state.get(t.state.name.lower(), 0.0) + trial_cpu_s(t)
    states = ", ".join(f"{k} {v:.2f}" for k, v in by_state.items()) or "no trial measured"
    gpu = c["gpu_s"] > 0 or saved["gpu_s"] > 0 or rep.spec.resources.gpu > 0
    rows = [
        ("CPU", f"<span id='cpu-seconds'>{c['cpu_s']:.2f}</span> CPU-s = {human_compute(c['cpu_s'], 'CPU')} "
                f"(by state: {_esc(states)})"),
    ]
    if gpu:  # a CPU-only study has no GPU line
        rows.append(("GPU", f"<span id='gpu-seconds'>{c['gpu_s']:.2f}</span> GPU-s = {human_compute(c['gpu_s'], 'GPU')}"))
    rows += [
        ("energy (estimate)", f"<span id='energy' data-kwh='{c['kwh']!r}'>{human_energy(c['kwh'])}</span> at "
                              f"{c['cpu_watts']:g} W per CPU core" + (f" and {c['gpu_watts']:g} W per GPU" if gpu else "")),
        ("trials measured", str(c["trials_measured"])),
    ]
    workers = c.get("workers")
    if workers and workers["processes"]:
        rows.append(("worker processes", f"<span id='worker-processes'>{workers['processes']}</span> ran the trials; "
                     f"start-up before their first trial (imports, data built at import): "
                     f"<span id='startup-cpu-seconds'>{workers['startup_cpu_s']:.2f}</span> CPU-s, "
                     f"{workers['startup_s']:.2f} s (not in the CPU figure above)"))
    if saved["pruned_trials"]:
        rows.append((
            "saved by pruning (estimate)",
            f"<span id='saved-cpu-seconds'>{saved['cpu_s']:.2f}</span> CPU-s, "
            + (f"{saved['gpu_s']:.2f} GPU-s, " if gpu else "")
            + f"{human_energy(saved['kwh'])}: {saved['pruned_trials']} pruned trials skipped {saved['epochs']} epochs "
            f"(a full run is {saved['full_epochs']}); {share} of the CPU time the study would have used "
            "without pruning",
        ))
    else:
        rows.append(("saved by pruning", "nothing: no trial was pruned"))
    return _table(rows, cls="kv") + (
        "<p class='note'>CPU-seconds are the CPU time of each trial's worker process, GPU-seconds its "
        "wall time times the GPUs assigned; a pruned trial's saving is the epochs it did not train "
        "priced at its own cost per epoch.</p>")


def _gaps_html(rep: StudyReport) -> str:
    if not rep.gaps:
        return f"<p class='note'>{_esc(rep.gap_note)}</p>"
    flagged = [g for g in rep.gaps if g.flagged]
    rows = [
        ((str(g.number), _fmt(g.step), _esc(g.train_metric), _fmt(g.train, 4), _esc(g.validation_metric),
          _fmt(g.validation, 4), f"{g.gap:+.4f}", "<b>LARGE GAP</b>" if g.flagged else "ok"),
         {"class": "flag" if g.flagged else ""})
        for g in rep.gaps
    ]
    verdict = (f"<p class='warn' id='overfit-warning'>&#9888; {len(flagged)} of the {len(rep.gaps)} best trials have a "
               f"train/validation gap above {rep.gap_threshold:g}: they may overfit.</p>" if flagged else
               f"<p class='ok'>No best trial has a train/validation gap above {rep.gap_threshold:g}.</p>")
    return verdict + _table(rows, ["trial", "step", "train metric", "train", "validation metric", "validation",
                                   "gap", ""], cls="grid")


def _trials_html(rep: StudyReport) -> str:
    rows = []
    nodes = node_labels(rep.trials)
    for t in rep.trials:
        d = _trial_data(t, nodes)
        values = "-" if t.values is None else ", ".join(_fmt(v) for v in t.values)
        rows.append((str(t.number), t.state.name.lower(), values, _fmt(d["epochs"]), f"{d['cpu_s']:.2f}",
                     f"{d['gpu_s']:.2f}", _fmt(d["duration_s"], 4), _esc(str(d["node"] or "")), _params(t.params)))
    return _table(rows, ["#", "state", "value(s)", "epochs", "CPU-s", "GPU-s", "seconds", "node", "params"],
                  cls="grid small")


def _figure_html(fig: Figure, pngs: set[str]) -> str:
    parts = []
    if fig.figure is None:  # a drawn figure carries its title itself
        parts.append(f"<h3>{_esc(fig.title)}</h3>")
        parts.append(f"<p class='note' id='note-{_esc(fig.key)}'>Not drawn: {_esc(fig.note)}</p>")
    else:
        parts.append(fig.figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"fig-{fig.key}", default_height=f"{HEIGHT}px",
            config={"displaylogo": False, "responsive": True},
        ))
        if f"{fig.key}.png" in pngs:
            parts.append(f"<p class='png'><a href='{_esc(fig.key)}.png'>{_esc(fig.key)}.png</a></p>")
    if fig.basis and fig.figure is not None:
        parts.append(f"<p class='basis' id='basis-{_esc(fig.key)}'>Rests on {_esc(fig.basis)}.</p>")
    for message in fig.messages:
        parts.append(f"<p class='note'>Note: {_esc(message)}</p>")
    return "<div class='figure'>" + "".join(parts) + "</div>"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Liberation Sans", sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 1em 2em 4em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
nav a { margin-right: 1em; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.8em; text-align: left;
  vertical-align: top; } table.grid td, table.grid th { border-bottom: 1px solid #eee; }
table.kv td:first-child { font-weight: bold; white-space: nowrap; } table.small { font-size: 0.85em; }
tr.flag td { background: #fde8e8; color: #a61b1b; } .warn { color: #a61b1b; font-weight: bold; }
.ok { color: #1b7a2f; } .note { color: #666; font-style: italic; } .figure { margin: 1em 0 2em; }
.png { font-size: 0.85em; margin: 0; }
"""


def render_html(rep: StudyReport, pngs: Sequence[Path] = (), png_skipped: str | None = None) -> str:
    from plotly.offline import get_plotlyjs

    from hpo import __version__

    s = rep.summary
    png_names = {p.name for p in pngs}
    sections: dict[str, list[Figure]] = {}
    for fig in rep.figures:
        sections.setdefault(fig.section, []).append(fig)
    tables = {"Overfitting": _gaps_html(rep), "Compute": _compute_html(rep)}
    plots = [k for k in sections if k not in ("Compute", "Overfitting")]
    order = ["Summary", "Compute", "Overfitting", *plots, "Trials"]
    body = []
    for title in order:
        anchor = _slug(title)
        content = {"Summary": _summary_html(rep), "Trials": _trials_html(rep)}.get(title, tables.get(title, ""))
        content += "".join(_figure_html(f, png_names) for f in sections.get(title, []))
        body.append(f"<section id='{anchor}'><h2>{_esc(title)}</h2>{content}</section>")
    nav = "".join(f"<a href='#{_slug(t)}'>{_esc(t)}</a>" for t in order)
    png_line = (f"{len(pngs)} PNG images next to this file." if pngs else
                f"No PNG images: {_esc(png_skipped)}." if png_skipped else "")
    data = json.dumps(_jsonable(rep.data()), default=str).replace("</", "<\\/")
    description = f"<p class='sub'>{_esc(rep.spec.description)}</p>" if rep.spec.description else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hpo report: {_esc(s.study_name)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>Study {_esc(s.study_name)}</h1>
{description}
<p class="sub">hpo {__version__} report, generated {rep.generated_at:%Y-%m-%d %H:%M:%S}. {png_line}</p>
<nav>{nav}</nav>
{"".join(body)}
<script type="application/json" id="{DATA_ID}">{data}</script>
</body>
</html>
"""


def _jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as null, so the embedded JSON is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
