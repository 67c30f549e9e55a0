"""hpo's write queue: changes kept in memory and written in one transaction.

Used by the owned Optuna storage (hpo.store.owned_storage) for a study's rows and by the
recorder for hpo's own attempt rows, so both commit together. A change queued again before the
flush replaces the queued one; inserts of one table go as one multi-row statement; a flush whose
transaction committed but whose reply was lost is recognised when retried (its rows exist) and
written change by change, skipping what is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

Op = Callable[[Session], Any]
Key = tuple[Any, ...]  # (kind, trial id, ...): what a queued write is about


@dataclass(frozen=True)
class _Insert:
    table: Table
    row: dict[str, Any]


def _insert_rows(table: Table, rows: list[dict[str, Any]], session: Session) -> None:
    session.execute(table.insert(), rows)


def _duplicate(exc: IntegrityError) -> bool:
    """A unique key violated (the row exists), as opposed to e.g. a NOT NULL violation."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505":  # PostgreSQL
        return True
    if orig is not None and orig.args and orig.args[0] == 1062:  # MySQL / MariaDB
        return True
    return "UNIQUE constraint failed" in str(orig)  # SQLite


class WriteQueue:
    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session = session_factory
        self._pending: dict[Key, _Insert | Op] = {}  # (kind, trial_id, ...) -> write, in order
        self._statements = 0

    @property
    def pending(self) -> int:
        """How many writes wait for the next flush."""
        return len(self._pending)

    def defer(self, statement: Executable, trial_id: int | None = None, key: Any = None) -> None:
        """Queue a statement on another table (hpo's own rows) for the next flush, so it commits
        with the study's writes. A later statement with the same ``key`` replaces it."""
        if key is None:
            self._statements += 1
            key = self._statements
        self._pending[("statement", trial_id, key)] = lambda session: session.execute(statement)

    def flush(self) -> None:
        """Write every queued change in one transaction."""
        self.write(None)

    def upsert(self, key: Key, exists: bool, model: Any, row: dict[str, Any], match: tuple[str, ...]) -> None:
        """Queue the write of one row of ``model``: an insert when the row is new, else an update
        of the row that ``match`` (column names) identifies. A row whose insert is queued and not
        flushed yet stays an insert, with the newer values. ``model``: an ORM model class."""
        table: Table = model.__table__
        if not exists or isinstance(self._pending.get(key), _Insert):
            self._pending[key] = _Insert(table, row)
            return
        where = [table.c[name] == row[name] for name in match]
        changes = {name: value for name, value in row.items() if name not in match}
        self._pending[key] = lambda session: session.execute(table.update().where(*where).values(changes))

    def _ops(self) -> list[Op]:
        """The queue as writes: the inserts of each table as one multi-row statement, then the
        rest in the order they were queued."""
        inserts: dict[Table, list[dict[str, Any]]] = {}
        others: list[Op] = []
        for write in self._pending.values():
            if isinstance(write, _Insert):
                inserts.setdefault(write.table, []).append(write.row)
            else:
                others.append(write)
        grouped: list[Op] = [partial(_insert_rows, table, rows) for table, rows in inserts.items()]
        return grouped + others

    def write(self, final: Callable[[Session], Any] | None) -> Any:
        if not self._pending and final is None:
            return None
        session = self._session()
        try:
            try:
                for op in self._ops():
                    op(session)
                result = final(session) if final is not None else None
                session.commit()
            except IntegrityError as exc:
                if not _duplicate(exc):
                    raise
                # Rows that exist already: an earlier flush committed but its reply was lost.
                # Write each change on its own, keeping the ones that are not there yet.
                session.rollback()
                result = self._write_one_by_one(final)
        except BaseException:
            try:
                session.rollback()
            except Exception:  # e.g. the commit went through and only its reply failed
                pass  # the original error is the one to report
            raise
        finally:
            session.close()
        self._pending.clear()
        return result

    def _write_one_by_one(self, final: Callable[[Session], Any] | None) -> Any:
        ops: list[Op] = [
            partial(_insert_rows, w.table, [w.row]) if isinstance(w, _Insert) else w for w in self._pending.values()
        ]
        result = None
        for op in [*ops, final]:
            if op is None:
                continue
            session = self._session()
            try:
                result = op(session)
                session.commit()
            except IntegrityError as exc:
                if not _duplicate(exc):
                    raise
                session.rollback()  # this row is there already
            finally:
                session.close()
        return result if final is not None else None

    def drop(self, trial_id: int) -> None:
        """Forget what is queued for a trial (another owner finished it)."""
        for key in [k for k in self._pending if k[1] == trial_id]:
            del self._pending[key]
