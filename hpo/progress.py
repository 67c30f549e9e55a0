"""Terminal output: a live progress bar while a study runs and a summary table after it."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from optuna.trial import FrozenTrial

from hpo.driver import Best, Counts
from hpo.spec import StudySpec


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
    table.add_row("trials", f"{summary.complete} complete, {summary.pruned} pruned, {summary.failed} failed")
    table.add_row("elapsed", f"{summary.elapsed_s:.1f} s")
    if summary.message:
        table.add_row("note", summary.message)
    if summary.best_trial is None:
        table.add_row("best", "no completed trial")
    else:
        table.add_row(f"best ({summary.direction})", f"{_fmt(summary.best_value)} (trial {summary.best_trial})")
        for key, value in summary.best_params.items():
            table.add_row(f"  {key}", f"{value:.6g}" if isinstance(value, float) else str(value))
    return table
