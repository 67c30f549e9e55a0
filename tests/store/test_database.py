"""Store: URL resolution, masking, clear errors that never leak a password, SQLite settings."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from hpo.errors import HpoError
from hpo.store.database import DEFAULT_URL, Store, mask, resolve_url

SECRET = "s3cr3t-pa55"


def test_url_precedence(monkeypatch):
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///hpo.db"
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///from-env.db")
    assert resolve_url(None) == "sqlite:///from-env.db"
    assert resolve_url("sqlite:///from-flag.db") == "sqlite:///from-flag.db"


def test_mask_hides_password():
    masked = mask(f"postgresql+psycopg://alice:{SECRET}@db.example:5432/studies")
    assert SECRET not in masked
    assert masked == "postgresql+psycopg://alice:***@db.example:5432/studies"


@pytest.mark.parametrize("url", ["not a url", "://nohost", "postgresql://u:p@host:notaport/db"])
def test_malformed_url_is_one_clear_line(url):
    with pytest.raises(HpoError) as err:
        Store(url).check()
    assert "\n" not in str(err.value)
    assert "storage" in str(err.value).lower()


def test_unknown_dialect():
    with pytest.raises(HpoError, match="unknown database dialect 'nosuchdb'"):
        Store("nosuchdb://u:p@localhost/x").engine


def test_unreachable_server_masks_password():
    store = Store(f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:1/studies?connect_timeout=2")
    with pytest.raises(HpoError) as err:
        store.check()
    text = str(err.value)
    assert text.startswith("cannot connect to storage postgresql+psycopg://alice:***@127.0.0.1:1/studies")
    assert SECRET not in text and "\n" not in text


def test_sqlite_missing_directory_writes_nothing(tmp_path):
    with pytest.raises(HpoError, match="does not exist"):
        Store(f"sqlite:///{tmp_path}/no/such/dir/hpo.db")
    assert list(tmp_path.iterdir()) == []


def test_sqlite_uses_wal_and_busy_timeout(sqlite_url):
    store = Store(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA busy_timeout")).scalar() >= 10_000
    store.dispose()


def test_server_engines_pre_ping(postgres_url):
    store = Store(postgres_url)
    assert store.engine.pool._pre_ping is True
    store.check()
    store.dispose()


@pytest.mark.parametrize("server", ["sqlite_url", "postgres_url"])
def test_a_store_of_another_optuna_schema_is_one_line_naming_it_and_the_upgrade(server, request):
    """A store whose Optuna tables are at an older revision than the installed Optuna's (made by
    an older Optuna): Optuna's own advice as one line, with the store's URL, password masked."""
    url = make_url(request.getfixturevalue(server))
    if url.get_backend_name() == "postgresql":
        url = url.set(password=SECRET)  # trust auth here: asked for by nobody, shown to nobody
    url = url.render_as_string(hide_password=False)
    store = Store(url)
    store.optuna  # noqa: B018 (creates Optuna's tables at the installed Optuna's revision)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'v3.0.0.d'"))
    store.dispose()
    with pytest.raises(HpoError) as err:
        Store(url).optuna  # noqa: B018
    text = str(err.value)
    assert f"optuna storage upgrade --storage {mask(url)}" in text and "is no longer compatible" in text
    assert SECRET not in text and "\n" not in text


def test_the_installed_optunas_schema_revision_is_read_once_per_process(sqlite_url, monkeypatch):
    """Optuna's schema check reads every migration script of the installed Optuna; hpo reads
    them once per process, not each time a store is opened (`hpo status`, each poll of a watch)."""
    from hpo.store import database

    reads = []
    real = optuna.storages.RDBStorage.get_head_version
    monkeypatch.setattr(optuna.storages.RDBStorage, "get_head_version", lambda self: reads.append(1) or real(self))
    monkeypatch.setattr(database, "_OPTUNA_HEAD", [])
    for _ in range(3):
        store = Store(sqlite_url)
        assert optuna.get_all_study_names(store.optuna) == []
        store.dispose()
    assert len(reads) == 1


@pytest.mark.parametrize("server", ["postgres_url", "mysql_url"])
def test_concurrent_first_uses_of_a_fresh_database_do_not_race(server, request, tmp_path):
    """Optuna's and hpo's schema creation on a fresh server database, from many submits at once:
    without the schema lock most of them failed ("type studydirection already exists")."""
    from concurrent.futures import ThreadPoolExecutor

    from hpo import api

    url = request.getfixturevalue(server)
    spec = tmp_path / "spec.yaml"
    spec.write_text("objective: builtin:branin\nsearch_space: branin\nn_trials: 2\n")

    def submit(i: int) -> str:
        return api.submit(spec, storage=url, name=f"first-use-{i}")

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(submit, range(8)))
    assert sorted(s.study_name for s in api.list_studies(storage=url)) == sorted(names)


_FIRST_USE = """
import pathlib, sys, time
url, folder, who = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
if who == "optuna":
    import optuna
    first_use = lambda: optuna.storages.RDBStorage(url)  # what optuna-dashboard and the optuna CLI do
else:
    from hpo.store.database import Store
    store = Store(url)
    first_use = lambda: (store.optuna, store.upgrade())  # what every hpo verb that writes does
(folder / f"ready-{who}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
first_use()
print("ok")
"""


def test_first_uses_of_a_fresh_sqlite_file_by_parallel_processes_do_not_race(tmp_path):
    """Five hpo processes and one of Optuna's tools open a SQLite file that does not exist yet at
    the same instant (each waits, imports done, for a common start), twice: every hpo process
    gets the whole schema. Before, SQLite ran each CREATE on its own and about half of them
    failed ("table studies already exists", "UNIQUE constraint failed:
    alembic_version.version_num", "table hpo_jobs already exists")."""
    import subprocess
    import sys
    import time

    from hpo.store.migrations import current

    for round_ in range(2):
        folder = tmp_path / f"round-{round_}"
        folder.mkdir()
        url = f"sqlite:///{folder / 'fresh.db'}"
        who = [f"hpo-{i}" for i in range(5)] + ["optuna"]
        procs = {w: subprocess.Popen([sys.executable, "-c", _FIRST_USE, url, str(folder), w], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for w in who}
        deadline = time.monotonic() + 120
        while len(list(folder.glob("ready-*"))) < len(who) and time.monotonic() < deadline:
            time.sleep(0.01)
        (folder / "go").touch()
        outputs = {w: p.communicate(timeout=120)[0] for w, p in procs.items()}
        for w in who[:-1]:
            assert procs[w].returncode == 0 and outputs[w].strip() == "ok", f"round {round_}, {w}: {outputs[w]}"
        store = Store(url)
        assert current(store.engine) is not None  # hpo's tables at a revision
        assert store.optuna.get_all_studies() == []  # Optuna's schema whole and usable
        store.dispose()


def test_a_schema_step_refused_for_a_stale_sqlite_snapshot_is_tried_again(store):
    """SQLite returns some lock conflicts at once as "database is locked", whatever the busy
    timeout (parallel first uses of a fresh file met one in CI). One it always returns so: in WAL
    mode, a transaction that read and then writes after another process committed in between.
    Like "already exists", that is a lost race: the schema step runs again. Real SQLite, the
    interleaving forced on the first try; any other error is raised at once."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE seen (x INTEGER)"))
    other = sa.create_engine(store.url)
    tries = []

    def step() -> str:
        tries.append(1)
        with store.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            conn.execute(sa.text("SELECT count(*) FROM seen")).scalar()  # the snapshot
            if len(tries) == 1:
                with other.begin() as commit:  # another process commits meanwhile
                    commit.execute(sa.text("INSERT INTO seen VALUES (1)"))
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS made (x INTEGER)"))
            conn.exec_driver_sql("COMMIT")
        return "made"

    assert store._schema_step(step) == "made"
    assert len(tries) == 2
    other.dispose()

    def broken() -> None:  # any other error is not a race: raised at once
        tries.append(1)
        with store.engine.begin() as conn:
            conn.execute(sa.text("SELECT * FROM missing"))

    tries.clear()
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        store._schema_step(broken)
    assert len(tries) == 1
