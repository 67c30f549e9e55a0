"""Shared fixtures: one Ray runtime per session, and real databases.

Database tests read their server's URL from an environment variable (CI defaults below). Outside
CI they skip when no server answers; under CI=true they fail instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import uuid
from pathlib import Path

import hpo  # noqa: F401  (sets Ray's auth mode before Ray is imported)

# isort: split
import pytest
import ray
import sqlalchemy as sa
from sqlalchemy.engine import make_url

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

POSTGRES_URL = os.environ.get("HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("HPO_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray for the whole session: 2 CPUs, 2 logical GPUs, token auth on, no dashboard."""
    if not ray.is_initialized():
        # 2 logical GPUs (no physical one here) so GPU placement is tested for real in Ray.
        ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def _s3_server():
    """An S3-compatible server on loopback (moto's): S3 itself cannot run here."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_url(_s3_server, monkeypatch) -> str:
    """A fresh prefix of a bucket on the test S3 server, as a checkpoints location. The
    credentials are the test server's (any will do), in the environment every process started
    by the test inherits, the way a cloud machine's workers get theirs."""
    import boto3

    for name, value in [("AWS_ACCESS_KEY_ID", "hpo-test"), ("AWS_SECRET_ACCESS_KEY", "hpo-test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")]:
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=_s3_server)
    try:
        client.create_bucket(Bucket="hpo-test")
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return f"s3://hpo-test/{uuid.uuid4().hex[:8]}?endpoint_url={_s3_server}"


@pytest.fixture(scope="session")
def _gcs_server():
    """A GCS-compatible server on loopback (gcp-storage-emulator): GCS cannot run here."""
    import socket

    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="hpo-test")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gs_url(_gcs_server, monkeypatch) -> str:
    """A fresh prefix of a bucket on the test GCS server (google-cloud-storage talks to it when
    STORAGE_EMULATOR_HOST names it; every process started by the test inherits that)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", _gcs_server)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "hpo-test")
    return f"gs://hpo-test/{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["s3", "gs"])
def bucket_url(request) -> str:
    """A fresh prefix in each kind of object store hpo keeps checkpoints in."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hpo.db'}"


@pytest.fixture
def store(sqlite_url):
    """A Store on a fresh SQLite file."""
    from hpo.store.database import Store

    store = Store(sqlite_url)
    yield store
    store.dispose()


def _server_or_skip(url: str, what: str) -> None:
    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        message = f"{what} at {make_url(url).render_as_string(hide_password=True)} not reachable: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def _postgres_server() -> str:
    _server_or_skip(POSTGRES_URL, "PostgreSQL")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def _mysql_server() -> str:
    _server_or_skip(MYSQL_URL, "MySQL/MariaDB")
    return MYSQL_URL


def _fresh_database(server_url: str, create: str, drop: str):
    """Create a uniquely named database on the server; yield its URL; drop it afterwards."""
    name = f"hpo_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(sa.text(create.format(name=name)))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(drop.format(name=name)))
        admin.dispose()


@contextlib.contextmanager
def _postgres_turn(exclusive: bool):
    """The suite runs in parallel processes (pytest-xdist) that share one PostgreSQL server: a test
    that restarts it (marker ``restarts_postgres``) waits until no other test uses the server, and
    the others wait while it runs. A lock file that every process on this machine sees."""
    with open(Path(tempfile.gettempdir()) / "hpo-tests-postgres.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def postgres_url(_postgres_server: str, request):
    with _postgres_turn(exclusive=request.node.get_closest_marker("restarts_postgres") is not None):
        yield from _fresh_database(_postgres_server, 'CREATE DATABASE "{name}"', 'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def mysql_url(_mysql_server: str):
    yield from _fresh_database(_mysql_server, "CREATE DATABASE `{name}`", "DROP DATABASE `{name}`")


# Whole modules whose tests start `hpo` processes, worker processes, Ray clusters or torch training.
SLOW_MODULES = {
    "test_api", "test_cli", "test_cli_verbs", "test_dashboard", "test_examples", "test_faults",
    "test_multiobjective", "test_outside_changes", "test_pruners", "test_ray_runtime", "test_report",
    "test_samplers", "test_service", "test_workloads",
}


def pytest_collection_modifyitems(config, items):
    """Markers from what a test uses: `slow` (the session's Ray, or a slow module), `integration`
    (a database server). `pytest -m "not slow and not integration"` is the quick run."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"postgres_url", "mysql_url", "_postgres_server", "_mysql_server"}:
            item.add_marker(pytest.mark.integration)
        if "ray_runtime" in names or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
