"""Keeping database credentials out of the processes that run trials.

Workers never need the database (the driver writes every result), so nothing that starts them
hands them a password: neither the Ray runtime hpo starts nor the local backend's processes
(and each worker drops what a cluster hpo did not start gave it: ``workers.credentials``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from workers.credentials import is_credential


@contextlib.contextmanager
def without_credentials() -> Iterator[None]:
    """Leave database credentials out of this process's environment while Ray starts: the Ray
    processes it starts (GCS, raylet, agents) and so every worker and trial inherit the
    environment as it is then. Put back afterwards."""
    hidden = {k: v for k, v in os.environ.items() if is_credential(k, v)}
    for key in hidden:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(hidden)
