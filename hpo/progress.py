"""Terminal output: a live progress bar while a study runs and a summary table after it."""

from __future__ import annotations

from optuna.trial import FrozenTrial
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpo.read.accounting import usage_text
from hpo.run.events import Best, Counts
from hpo.spec.study import StudySpec


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


class ProgressBar:
    """An Observer for StudyDriver that draws finished / pruned / failed, best value, elapsed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pruned {task.fields[pruned]}  failed {task.fields[failed]}  running {task.fields[running]}"),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = None

    def __enter__(self) -> ProgressBar:
        return self  # the bar appears once the driver starts: errors before that stay one line

    def __exit__(self, *exc) -> None:
        if self.task is not None:
            self.progress.stop()

    def started(self, spec: StudySpec, counts: Counts) -> None:
        self.progress.start()
        self.task = self.progress.add_task(
            spec.name, total=spec.n_trials, completed=counts.finished,
            pruned=counts.pruned, failed=counts.failed, running=counts.running, best="-",
        )

    def trial_finished(self, trial: FrozenTrial, counts: Counts, best: Best | None) -> None:
        self.progress.update(
            self.task, completed=counts.finished, pruned=counts.pruned, failed=counts.failed,
            running=counts.running, best=_fmt(best.value if best else None),
        )


def summary_table(summary) -> Table:
    table = Table(title=f"study {summary.study_name}: {summary.state.lower()}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("storage", summary.storage)
    budget = f" of {summary.n_trials}" if summary.n_trials else ""
    table.add_row(
        "trials",
        f"{summary.complete + summary.pruned}{budget} finished: {summary.complete} complete, "
        f"{summary.pruned} pruned; {summary.failed} failed, {summary.running} running"
        + (f", {summary.stopped} stopped (cancelled or handed back)" if summary.stopped else ""),
    )
    if summary.state == "RUNNING" and summary.owner:
        table.add_row("owner", summary.owner)
    if summary.elapsed_s is not None:
        table.add_row("elapsed", f"{summary.elapsed_s:.1f} s")
    if summary.message:
        table.add_row("note", summary.message)
    if summary.infeasible:
        table.add_row("infeasible", f"{summary.infeasible} complete trials violate constraints")
    for what, text in compute_rows(getattr(summary, "compute", None)):
        table.add_row(what, text)
    if summary.pareto_front is not None:
        names = summary.metrics or [f"value {i}" for i in range(len(summary.directions))]
        heading = ", ".join(f"{n} ({d})" for n, d in zip(names, summary.directions))
        table.add_row("pareto front", f"{len(summary.pareto_front)} trials: {heading}")
        for entry in summary.pareto_front:
            values = ", ".join(_fmt(v) for v in entry["values"])
            table.add_row(f"  trial {entry['number']}", f"{values}   {_params(entry['params'])}")
    elif summary.best_trial is None:
        table.add_row("best", "no completed (feasible) trial")
    else:
        table.add_row(f"best ({summary.directions[0]})", f"{_fmt(summary.best_value)} (trial {summary.best_trial})")
        for key, value in summary.best_params.items():
            table.add_row(f"  {key}", _value(value))
    return table


def compute_rows(compute: dict | None) -> list[tuple[str, str]]:
    """The `compute` and `saved by pruning` rows of a summary (see hpo.read.accounting), in human
    units; GPU figures only for a study that used GPUs."""
    if not compute:
        return []
    gpu = compute["gpu_s"] > 0 or compute["saved"]["gpu_s"] > 0
    watts = f"at {compute['cpu_watts']:g} W per CPU core" + (f", {compute['gpu_watts']:g} W per GPU" if gpu else "")
    rows = [("compute", f"{usage_text(compute, gpu)} ({compute['trials_measured']} trials measured; {watts})")]
    workers = compute.get("workers")
    if workers and workers["processes"]:
        rows.append((
            "workers",
            f"{workers['processes']} processes ran the trials; their start-up before a first trial took "
            f"{workers['startup_cpu_s']:.1f} CPU-s (not in compute above)",
        ))
    saved = compute["saved"]
    if saved["pruned_trials"]:
        rows.append((
            "saved by pruning",
            f"{usage_text(saved, gpu)} (estimated): {saved['pruned_trials']} pruned trials skipped "
            f"{saved['epochs']} epochs (a full run is {saved['full_epochs']})",
        ))
    else:
        rows.append(("saved by pruning", "nothing: no trial was pruned"))
    return rows


def _value(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _params(params: dict) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in params.items())


def best_table(summary) -> Table:
    if summary.pareto_front is not None:
        names = summary.metrics or [f"value {i}" for i in range(len(summary.directions))]
        table = Table(title=f"study {summary.study_name}: Pareto front")
        table.add_column("trial", justify="right")
        for name, direction in zip(names, summary.directions):
            table.add_column(f"{name} ({direction})", justify="right")
        table.add_column("params")
        for entry in summary.pareto_front:
            table.add_row(str(entry["number"]), *(_fmt(v) for v in entry["values"]), _params(entry["params"]))
        return table
    table = Table(title=f"study {summary.study_name}: best trial {summary.best_trial}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row(f"value ({summary.directions[0]})", _fmt(summary.best_value))
    for key, value in summary.best_params.items():
        table.add_row(key, _value(value))
    for part in summary.best_schedule or []:  # PBT: what the best model trained with, step by step
        table.add_row(f"steps {part['steps'][0]}-{part['steps'][1]}", f"member {part['member']}: {_params(part['params'])}")
    return table


def studies_table(studies) -> Table:
    table = Table(title="studies")
    numbers = ("finished", "pruned", "failed", "stopped", "running")
    for column in ("name", "state", *numbers, "best", "owner"):
        table.add_column(column, justify="right" if column in numbers else "left")
    for s in studies:
        best = _fmt(s.best_value) if s.pareto_front is None else f"{len(s.pareto_front)} on front"
        budget = f"/{s.n_trials}" if s.n_trials else ""
        table.add_row(
            s.study_name, s.state.lower(), f"{s.complete + s.pruned}{budget}", str(s.pruned), str(s.failed),
            str(s.stopped), str(s.running), best, s.owner if s.state == "RUNNING" and s.owner else "",
        )
    return table


def trials_table(name: str, rows: list[dict]) -> Table:
    table = Table(title=f"study {name}: {len(rows)} trials")
    for column in ("#", "state", "attempt", "value(s)", "steps", "seconds", "worker", "params", "error"):
        table.add_column(column)
    for row in rows:
        values = "-" if row["values"] is None else ", ".join(_fmt(v) for v in row["values"])
        seconds = "-" if row["duration_s"] is None else f"{row['duration_s']:.2f}"
        if (row.get("queued_s") or 0) >= 0.005:
            seconds += f" (+{row['queued_s']:.2f} queued)"
        attempt = str(row["attempt"]) + (f" (retry of #{row['retry_of']})" if row["retry_of"] is not None else "")
        worker = "-" if row["pid"] is None else \
            f"{row['node']} pid {row['pid']}".strip() + (" (cold)" if row["cold_start"] else "")
        state = "stopped" if row.get("stopped") else row["state"].lower()
        steps = str(row["steps"]) + (f" ({row['resumed_steps']} resumed)" if row.get("resumed_steps") else "")
        table.add_row(str(row["number"]), state, attempt, values, steps, seconds,
                      worker, _params(row["params"]), row["error"])
    return table


FINISHED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "MISSING"}


def watch_lines(fetch, interval: float, emit) -> None:
    """Call ``emit(summary, first)`` every ``interval`` seconds until the study is finished
    (``hpo status --watch --format json|csv``: a line per redraw, for a pipe)."""
    import time

    summary, first = fetch(), True
    while True:
        emit(summary, first)
        if summary.state in FINISHED_STATES:
            return
        time.sleep(interval)
        summary, first = fetch(), False


def watch_status(fetch, interval: float) -> None:
    """Redraw the status table every ``interval`` seconds until the study is finished."""
    import time

    from rich.live import Live

    finished = FINISHED_STATES
    summary = fetch()
    with Live(summary_table(summary), refresh_per_second=4) as live:
        while summary.state not in finished:
            time.sleep(interval)
            summary = fetch()
            live.update(summary_table(summary))
