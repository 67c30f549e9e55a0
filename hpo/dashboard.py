"""`hpo dashboard`: optuna-dashboard on the same store, in the foreground.

optuna-dashboard is handed the Store's Optuna storage object, never the URL, so the password
cannot reach its output; requests and Optuna's warnings are not logged, so the start line is all
it prints. It binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import warnings
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpo.errors import HpoError
from hpo.store import Store


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


def serve_dashboard(storage: str | None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on the store until Ctrl-C."""
    from optuna_dashboard import wsgi

    if not 0 <= port <= 65535:
        raise HpoError(f"port {port} is out of range (0-65535)")
    store = Store(storage)
    if store.is_sqlite and store.url.database not in (None, "", ":memory:"):
        path = Path(store.url.database).expanduser()
        if not path.is_file():  # do not create an empty database just to show nothing
            raise HpoError(f"no store at {store.masked} (run a study into it first)")
    store.check()
    try:
        app = wsgi(store.optuna)
    except RuntimeError as exc:  # Optuna's schema is newer or older than this Optuna
        raise HpoError(f"storage {store.masked}: {store.scrub(exc)}") from None

    try:
        server = make_server(host, port, app, _Server6 if ":" in host else WSGIServer, _QuietHandler)
    except OSError as exc:  # port taken, unknown host, address not on this machine
        raise HpoError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    shown = f"[{host}]" if ":" in host else host
    print(f"optuna-dashboard for {store.masked} on http://{shown}:{server.server_port} (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    if not _is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach it can read and change the studies",
              file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            # e.g. "importance may be inaccurate" on every page view of a small study
            warnings.filterwarnings("ignore", module="optuna")
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.dispose()
