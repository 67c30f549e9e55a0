"""Which store errors the recorder waits out (outages) and which it raises at once, on real
SQLite, PostgreSQL and MariaDB errors."""

from __future__ import annotations

import threading

import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hpo.run.recorder import StudyRecorder, _is_outage


def _error_of(engine: sa.Engine, *statements: str) -> sa.exc.DBAPIError:
    with pytest.raises(sa.exc.DBAPIError) as caught:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    return caught.value


def test_sqlite_locked_is_an_outage_and_a_missing_table_is_not(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    holder = sa.create_engine(url)
    writer = sa.create_engine(url, connect_args={"timeout": 0.05})
    with holder.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    with holder.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        locked = _error_of(writer, "INSERT INTO t VALUES (1)")
        conn.exec_driver_sql("ROLLBACK")
    assert "locked" in str(locked)
    assert _is_outage(locked)
    missing = _error_of(writer, "INSERT INTO no_such_table VALUES (1)")
    assert isinstance(missing, sa.exc.OperationalError) and not _is_outage(missing)
    holder.dispose()
    writer.dispose()


def test_mariadb_bad_statements_are_raised_and_a_refused_connection_is_an_outage(mysql_url):
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE positive (x INT CHECK (x > 0))"))
    # Errors 4025 and 1054, which pymysql raises as OperationalError like a lost connection.
    for statement, errno in (("INSERT INTO positive VALUES (-1)", 4025), ("SELECT nope FROM positive", 1054)):
        error = _error_of(engine, statement)
        assert isinstance(error, sa.exc.OperationalError) and error.orig.args[0] == errno
        assert not _is_outage(error)
    engine.dispose()
    refused = sa.create_engine(make_url(mysql_url).set(port=1))
    with pytest.raises(sa.exc.OperationalError) as caught:
        refused.connect()
    assert _is_outage(caught.value)


def test_postgres_killed_connection_is_an_outage_and_bad_data_is_not(postgres_url):
    engine = sa.create_engine(postgres_url)
    killed = _error_of(engine, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert _is_outage(killed)
    bad = _error_of(engine, "SELECT 1 / 0")
    assert not _is_outage(bad)
    engine.dispose()


def test_the_recorder_waits_out_a_lock_and_raises_a_data_error_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    holder = sa.create_engine(url, connect_args={"check_same_thread": False})
    writer = sa.create_engine(url, connect_args={"timeout": 0.05})
    with holder.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    recorder = StudyRecorder(optuna.create_study(), outage_timeout=30.0)
    calls = []

    def write(table):
        def insert():
            calls.append(table)
            with writer.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
        return insert

    with holder.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")  # another process holds the file for a second
        release = threading.Timer(1.0, conn.exec_driver_sql, ("ROLLBACK",))
        release.start()
        recorder._retrying("write", write("t"))
        release.join()
    assert len(calls) >= 2  # failed while locked, went through once released
    with writer.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1

    calls.clear()
    with pytest.raises(sa.exc.OperationalError):
        recorder._retrying("write", write("missing"))
    assert calls == ["missing"]  # raised at once, not retried for the outage timeout
    holder.dispose()
    writer.dispose()
