"""Runs the migrations in alembic/ against an engine, with hpo's own version table."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Engine

from alembic import command


def script_location() -> Path:
    """alembic/ in a source checkout, or its copy inside the installed wheel."""
    package = Path(__file__).resolve().parent.parent  # hpo/
    for candidate in (package / "_alembic", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("hpo's alembic migrations are missing from this installation")


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(_config(engine), revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from hpo.store.schema import VERSION_TABLE

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
