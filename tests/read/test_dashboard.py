"""`hpo dashboard`: the installed console script serving optuna-dashboard, checked in headless Chromium.

The browser is Debian's chromium driven by selenium through /usr/bin/chromedriver (installed by
.ci/install-browser); selenium never downloads a driver. Without them the browser test skips
outside CI and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from hpo import api
from hpo.store.database import Store

from browser import headless_chromium, wsgi_call
from conftest import REPO
from shell import assert_one_line_error

HPO = str(Path(sys.executable).parent / "hpo")
EXAMPLE = REPO / "examples" / "digits-mlp.yaml"
ARTIFACTS = REPO / "test-artifacts"
SECRET = "SECRETPW"
STUDY = "dash-study"
N_TRIALS = 4


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}


def hpo(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([HPO, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_env())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int, pid: int) -> set[str]:
    """Local addresses where process `pid` has a TCP socket in LISTEN state on `port`, from
    /proc/net/tcp{,6} (only its own sockets: another process may hold the same port number on
    another address, e.g. a Ray process on the machine's address)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port and inode in inodes:
                raw = bytes.fromhex(address)
                if width == 8:  # one little-endian 32-bit word
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


class Dashboard:
    """`hpo dashboard` as a subprocess; output goes to files so a full pipe can never block it."""

    def __init__(self, storage: str, port: int, tmp_path: Path, *extra: str) -> None:
        self.port = port
        self.out_path, self.err_path = tmp_path / "dashboard.out", tmp_path / "dashboard.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [HPO, "dashboard", "--storage", storage, "--port", str(port), *extra],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=_env(), cwd=tmp_path,
            )

    @property
    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def wait_until_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"hpo dashboard exited with {self.proc.returncode}: {self.output}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"hpo dashboard did not listen on port {self.port} within {timeout}s: {self.output}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C: the documented way to stop it
            try:  # generous: on a loaded 2-core CI machine a busy server takes a while to notice
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def browser(tmp_path):
    with headless_chromium(tmp_path) as driver:
        yield driver


def wait_for_text(driver, *texts: str, timeout: float = 30) -> str:
    """The page's visible text once it contains every one of `texts`; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            body = driver.find_element("tag name", "body").text
        except Exception:  # the page is being replaced under us; look again
            body = ""
        if all(text in body for text in texts):
            return body
        time.sleep(0.25)
    pytest.fail(f"page {driver.current_url} never showed {texts!r} within {timeout}s; "
                f"it showed: {body[:500]!r}")


def test_dashboard_shows_the_study_in_a_browser(sqlite_url, tmp_path, browser):
    # Create the store's tables first, so the dashboard can start while the study runs.
    store = Store(sqlite_url)
    store.upgrade()
    store.optuna  # noqa: B018 (creates Optuna's tables)
    store.dispose()
    port = free_port()
    dashboard = Dashboard(sqlite_url, port, tmp_path)
    try:
        summary = api.run(EXAMPLE, storage=sqlite_url, n_trials=N_TRIALS, name=STUDY, backend="local")
        assert summary.complete + summary.pruned == N_TRIALS
        dashboard.wait_until_listening()
        assert listening_addresses(port, dashboard.proc.pid) == {"127.0.0.1"}  # loopback only, not 0.0.0.0 or ::

        base = f"http://127.0.0.1:{port}/dashboard"
        browser.get(base)
        wait_for_text(browser, STUDY)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        # The study list shows name and direction; the trial count is on the study's trial list.
        browser.find_element("xpath", f"//a[contains(@href, '/studies/') and contains(., '{STUDY}')]").click()
        wait_for_text(browser, f"{STUDY} (id=", "Intermediate values", "trial #0")
        study_page = browser.current_url.rstrip("/")
        assert "/studies/" in study_page
        heading = browser.find_element("xpath", "//*[text()='Intermediate values']")
        browser.execute_script("arguments[0].scrollIntoView()", heading)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-study.png"))

        browser.get(study_page + "/trials")
        trials_page = wait_for_text(browser, f"{N_TRIALS} Trials", "Intermediate Values")
        assert f"{N_TRIALS} Trials" in trials_page.splitlines()
    finally:
        dashboard.stop()

    # One line on start, and no request log afterwards.
    lines = dashboard.output.strip().splitlines()
    assert lines == [f"optuna-dashboard for {sqlite_url} on http://127.0.0.1:{port} (Ctrl-C stops it)"]
    assert dashboard.proc.returncode == 0


def test_dashboard_on_postgres_never_shows_the_password(postgres_url, tmp_path):
    # The server trusts local connections, so any password works and must still be masked.
    url = make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)
    port = free_port()
    dashboard = Dashboard(url, port, tmp_path)
    try:
        dashboard.wait_until_listening()
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
            body = response.read().decode()
        assert json.loads(body) == {"study_summaries": []}  # a fresh database: served, empty
    finally:
        dashboard.stop()
    assert SECRET not in dashboard.output
    assert make_url(url).render_as_string(hide_password=True) in dashboard.output


def test_unreachable_postgres_is_one_line_without_the_password(tmp_path):
    result = hpo("dashboard", "--storage", f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/x?connect_timeout=2",
                 "--port", str(free_port()), cwd=tmp_path)
    assert_one_line_error(result, "cannot connect to storage postgresql+psycopg://u:***@127.0.0.1:1/x")
    assert SECRET not in result.stdout + result.stderr


def test_malformed_url_is_one_line(tmp_path):
    result = hpo("dashboard", "--storage", "not a url", cwd=tmp_path)
    assert_one_line_error(result, "malformed storage URL")


def test_missing_sqlite_file_is_refused_and_not_created(tmp_path):
    db = tmp_path / "absent.db"
    result = hpo("dashboard", "--storage", f"sqlite:///{db}", "--port", str(free_port()), cwd=tmp_path)
    assert_one_line_error(result, f"no store at sqlite:///{db}")
    assert not db.exists()
    assert list(tmp_path.iterdir()) == []


def test_port_in_use_is_one_line(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'taken.db'}"
    optuna.create_study(study_name="s", storage=url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        result = hpo("dashboard", "--storage", url, "--port", str(sock.getsockname()[1]), cwd=tmp_path)
    assert_one_line_error(result, "cannot listen on 127.0.0.1:")


def test_a_read_only_dashboard_changes_nothing_a_writable_one_would(tmp_path):
    import optuna

    from hpo.read.dashboard import build_app

    store = Store(f"sqlite:///{tmp_path}/d.db")
    study = optuna.create_study(study_name="watched", storage=store.optuna)
    running = study.ask()
    study_id = store.optuna.get_study_id_from_name("watched")
    tell = f"/api/trials/{running._trial_id}/tell"
    guarded = build_app(store, writable=False)
    assert wsgi_call(guarded, "GET", "/api/studies")[0].startswith("200")
    status, body = wsgi_call(guarded, "POST", tell, {"state": "Complete", "values": [1.0]})
    assert status.startswith("403") and b"read-only" in body
    assert wsgi_call(guarded, "DELETE", f"/api/studies/{study_id}")[0].startswith("403")
    assert optuna.load_study(study_name="watched", storage=store.optuna).trials[0].state.name == "RUNNING"
    # The same requests do change the store through a writable one: the 403 is what stopped them.
    writable = build_app(store, writable=True)
    assert wsgi_call(writable, "POST", tell, {"state": "Complete", "values": [1.0]})[0][:1] == "2"
    assert optuna.load_study(study_name="watched", storage=store.optuna).trials[0].state.name == "COMPLETE"
    store.dispose()


def test_the_dashboard_is_read_only_by_default_while_a_study_is_run(tmp_path):
    from hpo.read.dashboard import serve_is_running
    from hpo.store.jobs import Jobs, JobState

    store = Store(f"sqlite:///{tmp_path}/r.db")
    store.upgrade()
    jobs = Jobs(store.engine)
    jobs.create("s", "{}")
    assert not serve_is_running(store)
    assert jobs.claim("s", "serve-1", lease_s=30)
    assert serve_is_running(store)
    jobs.finish("s", "serve-1", JobState.INTERRUPTED)
    assert not serve_is_running(store)
    store.dispose()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_that_arrives_while_a_request_is_answered_still_stops_the_dashboard(tmp_path, sig):
    """wsgiref answers an exception raised inside a request (KeyboardInterrupt too) with a 500
    and serves on: Ctrl-C while the dashboard answered one of its pages' polls used to be lost.
    A request is held inside the app here (a POST whose body has not all arrived) when the
    signal comes; once it ends the dashboard must exit, cleanly."""
    import optuna

    url = f"sqlite:///{tmp_path / 'held.db'}"
    optuna.create_study(study_name="s", storage=url)
    port = free_port()
    dashboard = Dashboard(url, port, tmp_path, "--writable")
    try:
        dashboard.wait_until_listening()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"POST /api/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 200\r\n\r\n{\"study_name\": ")  # the app waits for the rest
            time.sleep(1.0)  # the server reads the head and calls the app, which reads the body
            dashboard.proc.send_signal(sig)
            time.sleep(0.5)
        # the held request ends with its connection; the server must not go on serving
        try:
            code = dashboard.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hpo dashboard still serving 30 s after {sig.name}: {dashboard.output}")
    finally:
        dashboard.stop()
    assert code == 0, dashboard.output
    assert dashboard.output.strip().splitlines() == [
        f"optuna-dashboard for {url} on http://127.0.0.1:{port} (Ctrl-C stops it)"], dashboard.output


def test_serving_from_another_thread_still_works_and_shuts_down():
    """Signal handlers can only be set in the main thread: a program that serves the dashboard
    from a thread of its own (and stops it with shutdown()) gets the plain loop."""
    import threading
    from urllib.request import urlopen
    from wsgiref.simple_server import WSGIServer, make_server

    from hpo.read.dashboard import _QuietHandler, serve_until_stopped

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]

    server = make_server("127.0.0.1", 0, app, WSGIServer, _QuietHandler)
    thread = threading.Thread(target=serve_until_stopped, args=(server,), daemon=True)
    thread.start()
    try:
        with urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=10) as response:
            assert response.read() == b"served"
    finally:
        if thread.is_alive():  # shutdown() waits for a loop that never started otherwise
            server.shutdown()
        thread.join(timeout=10)
        server.server_close()
    assert not thread.is_alive()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the main thread's untouched
