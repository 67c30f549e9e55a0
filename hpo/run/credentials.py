"""Keeping database credentials out of the processes that run trials.

Workers never need the database (the driver writes every result), so nothing that starts them
hands them a password: neither the Ray runtime hpo starts nor the local backend's processes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping

# A URL with a password in it (scheme://user:password@host), and variables that hold one.
_URL_WITH_PASSWORD = re.compile(r"://[^/\s@:]*:[^/\s@]+@")
CREDENTIAL_VARS = ("HPO_STORAGE", "PGPASSWORD", "MYSQL_PWD")


def is_credential(name: str, value: str) -> bool:
    return name in CREDENTIAL_VARS or bool(_URL_WITH_PASSWORD.search(value))


def scrubbed_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that hold a database credential."""
    return {k: v for k, v in env.items() if not is_credential(k, v)}


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
