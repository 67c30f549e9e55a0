"""The SQL store: URL resolution, engines, migrations and Optuna's storage on the same database.

The URL comes from ``--storage``, then ``HPO_STORAGE``, then ``sqlite:///hpo.db``. SQLite runs in
WAL mode with a busy timeout; server databases get ``pool_pre_ping`` (except the driver's
writer, see `Store.writer`). A URL is only ever shown in SQLAlchemy's masked form, so a password
never reaches output or logs.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from hpo.errors import HpoError

DEFAULT_URL = "sqlite:///hpo.db"
ENV_VAR = "HPO_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 60
SCHEMA_LOCK_ID = 0x68706F  # "hpo": the advisory lock that serializes schema creation
SCHEMA_TRIES = 8  # a schema step that lost a race to another creator is tried again, this often


T = TypeVar("T")


_OPTUNA_HEAD: list[str] = []  # the installed Optuna's schema revision, once read


def _optuna_storage(url: str, engine_kwargs: dict) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage with its schema check, for a fraction of its cost: Optuna's own check
    reads every migration script of the installed Optuna each time a storage is made (85 ms of
    the 100 ms of an `hpo status`); what it compares the store's revision with cannot change
    within a process, so it is read once. A store at another revision goes through Optuna's own
    check, which raises RuntimeError with its advice."""
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True)
    if not _OPTUNA_HEAD:
        _OPTUNA_HEAD.append(storage.get_head_version())
    if storage.get_current_version() != _OPTUNA_HEAD[0]:
        storage.engine.dispose()
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    return storage


def resolve_url(url: str | None = None) -> str:
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def mask(url: str | URL) -> str:
    """The URL with its password replaced by ***; safe to print or log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<malformed storage URL>"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise HpoError(
            "malformed storage URL (expected e.g. sqlite:///hpo.db or "
            "postgresql+psycopg://user:***@host/db)"
        ) from None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise HpoError(f"storage {mask(parsed)}: directory {folder} does not exist")
    return parsed


class Store:
    """One database holding Optuna's tables and hpo's own (jobs), each migrated separately."""

    def __init__(self, url: str | None = None) -> None:
        self.url: URL = _parse(resolve_url(url))
        self.masked = mask(self.url)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None for servers and in-memory databases."""
        if not self.is_sqlite or self.url.database in (None, "", ":memory:"):
            return None
        return Path(self.url.database).expanduser().resolve()

    def exists(self) -> bool:
        """False only for a SQLite file not created yet (servers are assumed to exist)."""
        path = self.sqlite_path
        return path is None or path.exists()

    def _engine_kwargs(self) -> dict:
        if self.is_sqlite:
            return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        return {"pool_pre_ping": True, "pool_recycle": 1800}

    @cached_property
    def engine(self) -> Engine:
        try:
            engine = sa.create_engine(self.url, **self._engine_kwargs())
        except NoSuchModuleError:
            raise HpoError(
                f"storage {self.masked}: unknown database dialect {self.url.drivername!r}"
            ) from None
        except (ImportError, ArgumentError) as exc:
            raise HpoError(f"storage {self.masked}: {self.scrub(exc)}") from None
        if self.is_sqlite:
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def check(self) -> None:
        """Connect once; raise HpoError with a masked URL when the database cannot be reached.

        A SQLite file that does not exist yet is not created here (nothing is written before
        the first real write); its folder was checked when the URL was parsed.
        """
        path = self.sqlite_path
        if path is not None and not path.exists():
            if not os.access(path.parent, os.W_OK):
                raise HpoError(f"storage {self.masked}: cannot create files in {path.parent}")
            return
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise HpoError(f"cannot connect to storage {self.masked}: {self.scrub(exc)}") from None

    def scrub(self, exc: BaseException) -> str:
        """First line of an error's text, with the password (if any) masked out."""
        orig = getattr(exc, "orig", None) or exc
        text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        if self.url.password:
            text = text.replace(str(self.url.password), "***")
        return text

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """Hold the database's schema lock: the first uses of a fresh server database (Optuna's
        tables and types, hpo's migrations) are serialized between processes instead of racing
        ("type studydirection already exists"). A session-level advisory lock on PostgreSQL,
        GET_LOCK on MySQL/MariaDB; SQLite serializes writers by itself."""
        backend = self.url.get_backend_name()
        if backend not in ("postgresql", "mysql", "mariadb"):
            yield
            return
        take, give = ((f"SELECT pg_advisory_lock({SCHEMA_LOCK_ID})", f"SELECT pg_advisory_unlock({SCHEMA_LOCK_ID})")
                      if backend == "postgresql" else
                      ("SELECT GET_LOCK('hpo_schema', 300)", "SELECT RELEASE_LOCK('hpo_schema')"))
        with self.engine.connect() as conn:
            conn.execute(sa.text(take))
            try:
                yield
            finally:
                conn.execute(sa.text(give))

    def _schema_step(self, step: Callable[[], T]) -> T:
        """Run a step that may create schema (Optuna's tables, hpo's migrations) under the schema
        lock, and again when it lost a race to a creator that takes no lock of ours: Optuna's own
        tools (optuna-dashboard, `optuna create-study`) on a fresh database, or, on SQLite,
        another hpo process creating Optuna's tables (SQLite runs each CREATE on its own, so two
        processes can both find a table missing). Both steps are idempotent: a retry finds what
        the other process made and goes on from there."""
        for attempt in range(1, SCHEMA_TRIES + 1):
            try:
                with self._schema_lock():
                    return step()
            except SQLAlchemyError as exc:
                if attempt == SCHEMA_TRIES or not _lost_a_race(exc):
                    raise
            time.sleep(min(1.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def has_study(self, name: str) -> bool:
        """Whether Optuna's study of that name is in the store (optuna-dashboard or the optuna CLI
        may have deleted it behind hpo's back)."""
        return self.exists() and name in optuna.get_all_study_names(self.optuna)

    def upgrade(self) -> None:
        """Bring hpo's own tables to the newest revision (Optuna migrates its own tables)."""
        from hpo.store.migrations import upgrade

        try:
            self._schema_step(lambda: upgrade(self.engine))
        except SQLAlchemyError as exc:
            raise HpoError(f"migrating storage {self.masked} failed: {self.scrub(exc)}") from None

    @cached_property
    def optuna(self) -> optuna.storages.RDBStorage:
        """Optuna's RDB storage on the same database (created on first use), its schema checked
        against the installed Optuna's: a store of an older or newer Optuna is one line naming it
        and the fix."""
        url = self.url.render_as_string(hide_password=False)
        try:  # it creates Optuna's tables on a fresh database
            storage = self._schema_step(lambda: _optuna_storage(url, self._engine_kwargs()))
        except SQLAlchemyError as exc:
            raise HpoError(f"cannot open storage {self.masked}: {self.scrub(exc)}") from None
        except RuntimeError as exc:  # Optuna's schema check
            hint = str(exc).replace("$STORAGE_URL", self.masked)
            raise HpoError(f"storage {self.masked}: {' '.join(hint.split())}") from None
        if self.is_sqlite:
            # Optuna builds its own engine: give its connections the same pragmas as ours
            # (busy timeout, and synchronous=NORMAL, which is durable with WAL).
            storage.engine.dispose()
            sa.event.listen(storage.engine, "connect", _sqlite_pragmas)
        return storage

    @cached_property
    def writer(self) -> Engine:
        """The engine a driver's write-behind storage commits through. On a server, one without
        ``pool_pre_ping``: that ping is a round trip per transaction, and the driver retries a
        write whose connection dropped anyway (SQLAlchemy then recycles the pool's connections)."""
        if self.is_sqlite:
            return self.optuna.engine
        return sa.create_engine(self.url, pool_recycle=1800)

    def dispose(self) -> None:
        if "writer" in self.__dict__ and not self.is_sqlite:
            self.writer.dispose()
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "optuna" in self.__dict__:
            self.optuna.remove_session()
            self.optuna.engine.dispose()


def _lost_a_race(exc: SQLAlchemyError) -> bool:
    """Whether a schema step failed because another process made the same thing meanwhile: a
    table, index or type that "already exists" (every dialect words it so), or a duplicate row
    in a version table (an integrity error: a schema step inserts nothing else). On SQLite also
    "database is locked": SQLite returns some lock conflicts at once, without waiting out the busy
    timeout (in WAL mode, for one, a transaction that read and then writes after another process
    committed in between), and parallel first uses of a fresh file meet them (seen in CI)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return isinstance(exc, IntegrityError) or "already exists" in text or "database is locked" in text


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # persists in the file; Optuna's engine shares it
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
