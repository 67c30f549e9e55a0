"""The `hpo` command: a thin click layer over hpo.api."""

from __future__ import annotations

import functools
import gc
import logging
import signal
import sys
import threading

import click
from rich.console import Console as RichConsole

from hpo import __version__, api, defaults
from hpo.errors import HpoError
from hpo.read.formats import FORMATS, to_csv, to_json

storage_option = click.option(
    "--storage", envvar="HPO_STORAGE", show_envvar=True, default=None,
    help="SQLAlchemy URL of the store [default: sqlite:///hpo.db].",
)
ray_option = click.option(
    "--ray-address", envvar="HPO_RAY_ADDRESS", default=None,
    help="Join this Ray cluster (e.g. 127.0.0.1:6380) [default: start a local one].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def output_options(func):
    """``--format table|json|csv`` (and ``--json``, its alias for ``--format json``) for a read verb."""

    @functools.wraps(func)
    def wrapper(*args, fmt: str, as_json: bool, **kwargs):
        return func(*args, fmt="json" if as_json else fmt, **kwargs)

    wrapper = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(wrapper)
    return click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
        help="A table, JSON, or CSV (nested fields flattened as Optuna's trials_dataframe names them: "
             "params_lr, values_0).",
    )(wrapper)

cpu_watts_option = click.option(
    "--cpu-watts", envvar="HPO_CPU_WATTS", show_envvar=True, type=click.FloatRange(min=0), default=None,
    help="Watts per CPU core, for the energy estimate [default: 15].",
)
gpu_watts_option = click.option(
    "--gpu-watts", envvar="HPO_GPU_WATTS", show_envvar=True, type=click.FloatRange(min=0), default=None,
    help="Watts per GPU, for the energy estimate [default: 300].",
)


def _quiet_libraries() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Samplers such as qmc or nsgaiii are marked experimental by Optuna; that is not news to
    # someone who chose them in a spec.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def handle_errors(func):
    """Turn HpoError into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except HpoError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            # Ray turns an exception raised by a signal handler while it waits (ray.wait) into a
            # plain KeyboardInterrupt: what was received is remembered, not read off the type.
            if isinstance(exc, Terminated) or _TERMINATED.is_set():
                click.echo("terminated: running trials were handed back; run again to resume", err=True)
                sys.exit(143)
            click.echo("interrupted: running trials were stopped; run again to resume", err=True)
            sys.exit(130)

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, systemd and Kubernetes send) ends a foreground run as Ctrl-C does:
    running trials are handed back, the study resumes on the next run."""


_TERMINATED = threading.Event()  # SIGTERM was received


def _terminate_like_ctrl_c() -> None:
    def handler(signum, frame):
        _TERMINATED.set()
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpo")
@click.option("-v", "--verbose", count=True, help="Log what hpo and Optuna do (-v: info, -vv: debug) on stderr.")
def cli(verbose: int) -> None:
    """hpo: adaptive hyperparameter search for PyTorch, on Ray, with studies kept in SQL."""
    _quiet_libraries()
    if verbose:
        _log_to_stderr(logging.INFO if verbose == 1 else logging.DEBUG)


def _log_to_stderr(level: int) -> None:
    import optuna

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("hpo").setLevel(level)
    optuna.logging.set_verbosity(level)


def main() -> None:
    """Console entry point: usage errors are one line too (`error: ...`, exit 2)."""
    try:
        code = cli.main(standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    finally:
        # The command is done; what is left is the interpreter's teardown, which frees the objects
        # of some 900 modules (Optuna, SQLAlchemy, numpy, pydantic) while the garbage collector
        # walks them over and over: 0.2-0.25 s of wall and CPU after every command on this
        # project's machine. Frozen, they are freed without those walks (0.02 s). Exit handlers,
        # flushes and thread joins run as before; only cycles among these objects are left to the
        # operating system, which takes the whole process back a moment later.
        gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)


def _console() -> RichConsole:
    """A rich console; piped output (logs, CI) gets a wide fixed width instead of 80 columns."""
    return RichConsole() if sys.stdout.isatty() else RichConsole(width=200)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@storage_option
@ray_option
@click.option("--name", default=None, help="Study name (overrides the spec's name).")
@click.option("--n-trials", type=int, default=None, help="Trial budget (overrides the spec's n_trials).")
@click.option(
    "--backend", type=click.Choice(["auto", "local", "ray"]), default="auto", envvar="HPO_BACKEND",
    show_default=True,
    help="Where trials run: worker processes of this machine (local) or Ray. auto: Ray when "
         "--ray-address is given or trials ask for GPUs, else local.",
)
@json_option
@handle_errors
def run(
    spec: str, storage: str | None, ray_address: str | None, name: str | None, n_trials: int | None,
    backend: str, as_json: bool,
) -> None:
    """Run the study described by SPEC to its budget, in the foreground."""
    from hpo.progress import ProgressBar, summary_table

    _terminate_like_ctrl_c()
    options = dict(storage=storage, ray_address=ray_address, name=name, n_trials=n_trials, backend=backend)
    if as_json:
        summary = api.run(spec, **options)
        click.echo(to_json(summary.to_dict()))
    else:
        console = _console()
        with ProgressBar(console) as bar:
            summary = api.run(spec, **options, observer=bar)
        console.print(summary_table(summary))
    if summary.state != "COMPLETED":
        sys.exit(1)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@storage_option
@click.option("--name", default=None, help="Study name (overrides the spec's name).")
@click.option("--n-trials", type=int, default=None, help="Trial budget (overrides the spec's n_trials).")
@handle_errors
def submit(spec: str, storage: str | None, name: str | None, n_trials: int | None) -> None:
    """Validate SPEC and queue its study for `hpo serve`; prints the study name."""
    click.echo(api.submit(spec, storage=storage, name=name, n_trials=n_trials))


@cli.command()
@storage_option
@ray_option
@click.option("--max-studies", default=defaults.MAX_STUDIES, show_default=True, type=click.IntRange(min=1),
              help="Studies run at once; the cluster is shared evenly between them.")
@click.option("--poll", "poll_s", default=defaults.POLL_S, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between looks for queued studies.")
@click.option("--lease", "lease_s", default=defaults.LEASE_S, show_default=True, type=click.FloatRange(min=1.0),
              help="Seconds without a renewal after which another serve takes a study over.")
@handle_errors
def serve(storage: str | None, ray_address: str | None, max_studies: int, poll_s: float, lease_s: float) -> None:
    """Run queued studies until stopped (SIGTERM or Ctrl-C hand running trials back)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    api.serve(storage=storage, ray_address=ray_address, max_studies=max_studies, poll_s=poll_s,
              lease_s=lease_s, stop_on_signals=True)


def _emit(fmt: str, data, rows=None, table=None) -> None:
    """Print ``data`` as JSON, ``rows`` (default: ``data``, or ``[data]`` for one object) as
    CSV, or the rich ``table`` (a callable that draws it)."""
    if fmt == "json":
        click.echo(to_json(data))
    elif fmt == "csv":
        click.echo(to_csv(rows if rows is not None else data if isinstance(data, list) else [data]), nl=False)
    else:
        _console().print(table())


@cli.command(name="list")
@storage_option
@output_options
@handle_errors
def list_(storage: str | None, fmt: str) -> None:
    """List the studies in the store."""
    from hpo.progress import studies_table

    studies = api.list_studies(storage=storage)
    _emit(fmt, [s.to_dict() for s in studies], table=lambda: studies_table(studies))


@cli.command()
@click.argument("name")
@storage_option
@click.option("--watch", is_flag=True, help="Refresh until the study finishes (Ctrl-C to leave).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2))
@cpu_watts_option
@gpu_watts_option
@output_options
@handle_errors
def status(
    name: str, storage: str | None, watch: bool, interval: float, cpu_watts: float | None,
    gpu_watts: float | None, fmt: str,
) -> None:
    """Show a study's state, trial counts, best value, and the compute it used and saved.

    With --watch and --format json (csv), one JSON object (CSV row) per redraw."""
    from hpo.progress import summary_table, watch_lines, watch_status

    def fetch():
        return api.status(name, storage=storage, cpu_watts=cpu_watts, gpu_watts=gpu_watts)

    if watch and fmt == "table":
        watch_status(fetch, interval)
    elif watch:
        def emit(summary, first: bool) -> None:
            text = to_json(summary.to_dict(), lines=True) + "\n" if fmt == "json" else \
                to_csv([summary.to_dict()], header=first)
            click.echo(text, nl=False)
            sys.stdout.flush()

        watch_lines(fetch, interval, emit)
    else:
        summary = fetch()
        _emit(fmt, summary.to_dict(), table=lambda: summary_table(summary))


@cli.command()
@click.argument("name")
@storage_option
@output_options
@handle_errors
def best(name: str, storage: str | None, fmt: str) -> None:
    """Show the best trial (or the Pareto front of a multi-objective study)."""
    from hpo.progress import best_table

    summary = api.best(name, storage=storage)
    if summary.pareto_front is not None:
        data, rows = {"pareto_front": summary.pareto_front}, summary.pareto_front
    else:
        data = {"number": summary.best_trial, "value": summary.best_value, "params": summary.best_params}
        if summary.best_schedule is not None:  # PBT: the values per step range the best model trained with
            data["schedule"] = summary.best_schedule
        rows = [data]
    _emit(fmt, data, rows, table=lambda: best_table(summary))


@cli.command()
@click.argument("name")
@storage_option
@output_options
@handle_errors
def trials(name: str, storage: str | None, fmt: str) -> None:
    """List a study's trials."""
    from hpo.progress import trials_table

    rows = api.trials(name, storage=storage)
    _emit(fmt, rows, table=lambda: trials_table(name, rows))


@cli.command()
@click.argument("name")
@storage_option
@handle_errors
def cancel(name: str, storage: str | None) -> None:
    """Cancel a queued or running study."""
    was = api.cancel(name, storage=storage)
    click.echo(f"{name}: cancelled" + (" (its owner stops it within seconds)" if was == "RUNNING" else ""))


@cli.command()
@click.argument("name")
@storage_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None, help="New total trial budget.")
@handle_errors
def resume(name: str, storage: str | None, n_trials: int | None) -> None:
    """Queue a cancelled, interrupted or finished study again (for `hpo serve`)."""
    budget = api.resume(name, storage=storage, n_trials=n_trials)
    click.echo(f"{name}: queued" + (f" with n_trials={budget}" if n_trials is not None else ""))


@cli.command()
@click.argument("name")
@storage_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of stdout.")
@handle_errors
def export(name: str, storage: str | None, output: str | None) -> None:
    """Export a study (spec, trials, learning curves) as JSON."""
    text = to_json(api.export(name, storage=storage))
    if output:
        try:
            with open(output, "w") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            raise HpoError(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"{name}: exported to {output}")
    else:
        click.echo(text)


@cli.command(name="report")
@click.argument("name")
@storage_option
@click.option("--output", "-o", "output_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for report.html and the PNG images [default: ./hpo-report-NAME/].")
@cpu_watts_option
@gpu_watts_option
@click.option("--gap", "gap_threshold", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Flag best trials whose train/validation gap is larger than this.")
@click.option("--no-png", is_flag=True, help="Write only the HTML file.")
@handle_errors
def report_(
    name: str, storage: str | None, output_dir: str | None, cpu_watts: float | None, gpu_watts: float | None,
    gap_threshold: float, no_png: bool,
) -> None:
    """Write a study report: one self-contained HTML file with plots, and PNG images."""
    files = api.report(name, storage=storage, output_dir=output_dir, cpu_watts=cpu_watts,
                       gpu_watts=gpu_watts, gap_threshold=gap_threshold, png=not no_png)
    drawn = sum(f.drawn for f in files.report.figures)
    click.echo(f"{name}: report written to {files.html} ({drawn} figures, {len(files.pngs)} PNG images)")
    if files.png_skipped and not no_png:
        click.echo(f"warning: PNG images not written: {files.png_skipped}", err=True)


@cli.command()
@click.argument("name")
@storage_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def delete(name: str, storage: str | None, yes: bool) -> None:
    """Delete a study and its trials."""
    there = api.check_deletable(name, storage=storage)  # unknown or running: one clear line, before asking
    question = f"delete study {name!r} and all its trials?" if there else \
        f"study {name!r} was deleted outside hpo; remove what is left of it?"
    if not yes and not click.confirm(question, default=False):
        raise click.Abort()
    there = api.delete(name, storage=storage)
    click.echo(f"{name}: deleted" + ("" if there else " (its Optuna study had been deleted outside hpo)"))


@cli.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but loopback exposes the store to the network.")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--writable/--read-only", default=None,
              help="Whether the dashboard may change the store (delete studies, set trial states and values). "
                   "Default: read-only while a study of the store is being run, else writable.")
@handle_errors
def dashboard(storage: str | None, host: str, port: int, writable: bool | None) -> None:
    """Serve optuna-dashboard on the store (Ctrl-C or SIGTERM stops it)."""
    api.dashboard(storage=storage, host=host, port=port, writable=writable)


@cli.group()
def db() -> None:
    """Manage the store's schema."""


@db.command()
@storage_option
@handle_errors
def upgrade(storage: str | None) -> None:
    """Create or migrate hpo's tables in the store."""
    masked = api.upgrade_db(storage)
    click.echo(f"{masked} is at the newest schema")


if __name__ == "__main__":
    main()
