"""The one module of hpo that touches Optuna's internals, gated on the versions CI tests.

hpo's owned storage (hpo.store.owned_storage) writes Optuna's tables through Optuna's own ORM models,
and the recorder needs a trial's storage id and two pieces of a study's state that Optuna keeps
private. Everything of that kind is here, so an Optuna release that moves them breaks one
module, and `owned_storage_refusal` turns write-behind off (with one warning) where the Optuna
version or the store's Optuna schema is not one CI ran: hpo then writes through Optuna's public
RDBStorage, slower and still correct.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.storages._rdb import models  # noqa: F401  (the owned storage writes these tables)
from optuna.study._frozen import FrozenStudy  # noqa: F401  (BaseStorage.get_all_studies returns it)

log = logging.getLogger("hpo.optuna")

# The Optuna releases CI runs the suite and Optuna's storage contract on (pyproject pins
# optuna below the next minor), and the RDB schema revisions the owned storage writes.
TESTED_OPTUNA = ((5, 0), (5, 1))
TESTED_SCHEMAS = frozenset({"v3.2.0.a"})


def trial_id(trial: Any) -> int:
    """The storage id of an ``optuna.Trial`` or ``FrozenTrial`` (Optuna keeps it private)."""
    return int(trial._trial_id)


def study_id_of(study: optuna.Study) -> int:
    """The storage id of a study (Optuna keeps it private)."""
    return int(study._study_id)


def storage_of(study: optuna.Study) -> Any:
    """The storage a study reads and writes through (its ``storage`` argument, possibly wrapped
    in Optuna's cache)."""
    return study._storage


@contextlib.contextmanager
def inside_optimize(study: optuna.Study) -> Iterator[None]:
    """Let ``study.stop()`` (which samplers that run out of points call from ``after_trial``)
    work in a tell made outside ``study.optimize`` instead of raising."""
    local = study._thread_local
    local.in_optimize_loop = True
    try:
        yield
    finally:
        local.in_optimize_loop = False


def stop_requested(study: optuna.Study) -> bool:
    """Whether ``study.stop()`` was called (a sampler said it has nothing left to sample)."""
    return bool(getattr(study, "_stop_flag", False))


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def owned_storage_refusal(storage: RDBStorage, optuna_version: str | None = None) -> str | None:
    """Why hpo must not write this store's Optuna tables itself (None: it may).

    The owned storage writes rows the way this module's Optuna reads them; outside the Optuna
    versions and schema revisions CI tested, that is not known to hold.
    """
    version = _version(optuna_version or optuna.__version__)
    low, high = TESTED_OPTUNA
    if not low <= version <= high:
        return (f"Optuna {optuna_version or optuna.__version__} is outside the versions hpo was tested with "
                f"({'.'.join(map(str, low))} to {'.'.join(map(str, high))})")
    schema = storage.get_current_version()
    if schema not in TESTED_SCHEMAS:
        return f"the store's Optuna schema is {schema}, which hpo was not tested with"
    return None


_warned: set[str] = set()


WRITE_BEHIND_VAR = "HPO_WRITE_BEHIND"  # "off": always write through Optuna's own storage


def may_own(storage: RDBStorage) -> bool:
    """Whether drivers may use the owned (write-behind) storage; warns once per reason if not.
    ``HPO_WRITE_BEHIND=off`` turns it off by choice (no warning)."""
    if os.environ.get(WRITE_BEHIND_VAR, "on").lower() in ("off", "0", "false", "no"):
        return False
    reason = owned_storage_refusal(storage)
    if reason is None:
        return True
    if reason not in _warned:
        _warned.add(reason)
        log.warning("%s: writing trials through Optuna's own storage (slower, still correct)", reason)
    return False
