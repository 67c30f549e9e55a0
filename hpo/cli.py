"""The `hpo` command: a thin click layer over hpo.api."""

from __future__ import annotations

import functools
import json
import sys

import click
from rich.console import Console

from hpo import __version__, api
from hpo.errors import HpoError

storage_option = click.option(
    "--storage", envvar="HPO_STORAGE", show_envvar=True, default=None,
    help="SQLAlchemy URL of the store [default: sqlite:///hpo.db].",
)


def _quiet_libraries() -> None:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def handle_errors(func):
    """Turn HpoError into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except HpoError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: running trials were stopped; run again to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpo")
def main() -> None:
    """hpo: adaptive hyperparameter search for PyTorch, on Ray, with studies kept in SQL."""
    _quiet_libraries()


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@storage_option
@click.option("--ray-address", envvar="HPO_RAY_ADDRESS", default=None,
              help="Join this Ray cluster (e.g. 127.0.0.1:6380) [default: start a local one].")
@click.option("--name", default=None, help="Study name (overrides the spec's name).")
@click.option("--n-trials", type=int, default=None, help="Trial budget (overrides the spec's n_trials).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary, no progress bar.")
@handle_errors
def run(
    spec: str, storage: str | None, ray_address: str | None, name: str | None, n_trials: int | None,
    as_json: bool,
) -> None:
    """Run the study described by SPEC to its budget, in the foreground."""
    from hpo.progress import ProgressBar, summary_table

    options = dict(storage=storage, ray_address=ray_address, name=name, n_trials=n_trials)
    if as_json:
        summary = api.run(spec, **options)
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        console = Console(stderr=False)
        with ProgressBar(console) as bar:
            summary = api.run(spec, **options, observer=bar)
        console.print(summary_table(summary))
    if summary.state != "COMPLETED":
        sys.exit(1)


@main.group()
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
