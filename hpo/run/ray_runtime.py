"""Connecting to Ray: reuse the one this process already has, join a cluster, or start one.

A Ray runtime that hpo starts itself keeps Ray's token authentication on and its dashboard off;
nothing it adds listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator

import ray  # hpo/__init__.py set RAY_AUTH_MODE before this import

from hpo.errors import HpoError
from hpo.run import ray_leftovers
from hpo.run.credentials import without_credentials

ENV_VAR = "HPO_RAY_ADDRESS"


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Yield with Ray initialized; shut it down afterwards only if this call started it."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get(ENV_VAR)
    # Ray enables token authentication for new local clusters unless RAY_AUTH_MODE says
    # otherwise; hpo never starts a cluster without it.
    if not address and os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        raise HpoError("RAY_AUTH_MODE is set to disable Ray's token authentication; unset it")
    kwargs = dict(
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )
    if address:
        _probe(address)
        kwargs["address"] = address
    else:
        # "local": always a new runtime, never a cluster that `ray start` left on this machine.
        ray_leftovers.stop_leftovers()  # of runtimes hpo started whose owner was killed outright
        kwargs["address"] = "local"
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        kwargs["dashboard_host"] = "127.0.0.1"
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with without_credentials():
            context = ray.init(**kwargs)
        _keep_handler(signal.SIGTERM, previous)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray runtime"
        raise HpoError(f"cannot start or join Ray at {where}: {' '.join(str(exc).split())[:300]}") from None
    owned = None if address else ray_leftovers.record(str(context.address_info.get("session_dir") or ""))
    try:
        yield
    finally:
        ray.shutdown()
        ray_leftovers.release(owned)


def _keep_handler(signum: int, previous) -> None:
    """ray.init replaces the process's SIGTERM handler with one that aborts with a stack dump;
    the caller's own handler (`hpo run` ends like Ctrl-C: trials handed back) stays."""
    if callable(previous) and threading.current_thread() is threading.main_thread():
        signal.signal(signum, previous)


PROBE_TIMEOUT_S = 10.0


def _probe(address: str) -> None:
    """Fail in bounded time, with one line, when a cluster's GCS address does not answer (Ray
    itself keeps retrying for minutes). Addresses that are not host:port (``auto``, ``ray://``)
    are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise HpoError(f"cannot reach Ray at {address}: {reason} (is `ray start --head --port {port}` running there?)") from None


def cluster_capacity() -> tuple[float, float]:
    """(CPUs, GPUs) of the whole cluster, as Ray's logical resources."""
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
