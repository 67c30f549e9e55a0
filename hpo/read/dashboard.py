"""`hpo dashboard`: optuna-dashboard on the same store, in the foreground.

optuna-dashboard is handed the Store's Optuna storage object, never the URL, so the password
cannot reach its output; requests and Optuna's warnings are not logged, so the start line is all
it prints. It binds to 127.0.0.1 unless told otherwise, and is read-only while a study of the
store is being run (``--writable`` / ``--read-only`` decide otherwise). The checkpoints that
finished studies keep are among their artifacts, served from the studies' artifact roots.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
import threading
import warnings
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy as sa

from hpo.errors import HpoError
from hpo.spec.study import StudySpec
from hpo.store.artifacts import artifact_root
from hpo.store.database import Store
from hpo.store.jobs import Jobs
from hpo.store.published import ArtifactRoots


class _QuietHandler(WSGIRequestHandler):
    def address_string(self) -> str:  # no reverse DNS lookups
        return self.client_address[0]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib's signature)
        pass


class _Server6(WSGIServer):
    address_family = socket.AF_INET6


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_READS = ("GET", "HEAD", "OPTIONS")


def read_only(app):
    """WSGI middleware: every request that would change the store (optuna-dashboard's writes are
    its POST, PUT, PATCH and DELETE calls: delete a study, set a trial's state or values, notes,
    attributes) is refused with 403 and changes nothing; pages, plots and reads pass through."""

    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() in _READS:
            return app(environ, start_response)
        body = b'{"reason": "this dashboard is read-only (hpo dashboard --writable allows changes)"}'
        start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return guarded


def serve_is_running(store: Store) -> bool:
    """Whether an owner (`hpo serve` or `hpo run`) holds a live lease on a study of the store."""
    import sqlalchemy as sa

    from hpo.store.jobs import JobState, utcnow
    from hpo.store.schema import jobs

    try:
        with store.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(jobs)
                .where(jobs.c.state == JobState.RUNNING, jobs.c.lease_expires_at > utcnow())
            ).scalar() > 0
    except sa.exc.SQLAlchemyError:  # no hpo tables: nothing of hpo runs on it
        return False


def artifact_roots(store: Store) -> ArtifactRoots:
    """Where the store's studies keep checkpoints (and publish the kept ones): the default root
    and every root a stored spec names."""
    roots = [artifact_root(store)]
    if "hpo_jobs" in sa.inspect(store.engine).get_table_names():
        for job in Jobs(store.engine).all():
            try:
                roots.append(artifact_root(store, StudySpec.from_json(job.spec).checkpoints.path))
            except HpoError:  # a spec this version cannot read: its checkpoints are not served
                continue
    return ArtifactRoots(roots)


def build_app(store: Store, writable: bool):
    from optuna_dashboard import wsgi

    try:
        app = wsgi(store.optuna, artifact_store=artifact_roots(store))
    except RuntimeError as exc:  # Optuna's schema is newer or older than this Optuna
        raise HpoError(f"storage {store.masked}: {store.scrub(exc)}") from None
    return app if writable else read_only(app)


def serve_dashboard(storage: str | None, host: str = "127.0.0.1", port: int = 8080,
                    writable: bool | None = None) -> None:
    """Serve optuna-dashboard on the store until Ctrl-C. ``writable``: whether it may change the
    store; by default not while a study of it is being run (a trial's state or value set by hand
    would race the driver that owns it), else it may."""

    if not 0 <= port <= 65535:
        raise HpoError(f"port {port} is out of range (0-65535)")
    store = Store(storage)
    if store.is_sqlite and store.url.database not in (None, "", ":memory:"):
        path = Path(store.url.database).expanduser()
        if not path.is_file():  # do not create an empty database just to show nothing
            raise HpoError(f"no store at {store.masked} (run a study into it first)")
    store.check()
    if writable is None:
        writable = not serve_is_running(store)
    app = build_app(store, writable)

    try:
        server = make_server(host, port, app, _Server6 if ":" in host else WSGIServer, _QuietHandler)
    except OSError as exc:  # port taken, unknown host, address not on this machine
        raise HpoError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    shown = f"[{host}]" if ":" in host else host
    mode = "" if writable else ", read-only"
    print(f"optuna-dashboard for {store.masked} on http://{shown}:{server.server_port}{mode} (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    if not _is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach it can read{' and change' if writable else ''} "
              "the studies",
              file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            # e.g. "importance may be inaccurate" on every page view of a small study
            warnings.filterwarnings("ignore", module="optuna")
            serve_until_stopped(server)
    finally:
        server.server_close()
        store.dispose()


def serve_until_stopped(server: WSGIServer) -> None:
    """Serve until Ctrl-C (SIGINT) or SIGTERM, then return.

    Not by catching KeyboardInterrupt around ``serve_forever``: wsgiref's request handler catches
    every exception of a request with a bare ``except`` (KeyboardInterrupt included) and answers
    500, so a Ctrl-C that arrives while a page is being answered (the dashboard's pages poll its
    API every few seconds) was swallowed and the server went on serving. The first signal asks
    the loop to stop after the request in hand; a second one raises KeyboardInterrupt as usual.
    Outside the main thread (signal handlers cannot be set there) it serves as before."""
    if threading.current_thread() is not threading.main_thread():
        server.serve_forever(poll_interval=0.2)
        return
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        # shutdown() waits for the loop to end, so it cannot run in the loop's own thread
        threading.Thread(target=server.shutdown, name="dashboard-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
