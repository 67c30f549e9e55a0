"""Which environment variables hold a database credential, and leaving them out of a worker.

Workers never need the database (the driver writes every result). hpo starts its own Ray
runtime and local worker processes without these variables; a worker also drops them from its
own environment when it starts, for the clusters hpo joins but did not start (whose workers
inherit what `ray start` had on each node), so an objective, and any process it starts, cannot
read them through ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# A URL with a password in it (scheme://user:password@host), and variables that hold one.
_URL_WITH_PASSWORD = re.compile(r"://[^/\s@:]*:[^/\s@]+@")
CREDENTIAL_VARS = ("HPO_STORAGE", "PGPASSWORD", "MYSQL_PWD")


def is_credential(name: str, value: str) -> bool:
    return name in CREDENTIAL_VARS or bool(_URL_WITH_PASSWORD.search(value))


def scrubbed_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that hold a database credential."""
    return {k: v for k, v in env.items() if not is_credential(k, v)}


def drop_credentials() -> list[str]:
    """Remove credential variables from this process's environment; their names."""
    names = [k for k, v in os.environ.items() if is_credential(k, v)]
    for name in names:
        del os.environ[name]
    return names
