"""The service's defaults, declared once: the CLI, the Python API, the serve loop and the driver
all read them from here."""

import os
from pathlib import Path

LEASE_S = 30.0  # a job whose owner stopped renewing for this long can be taken over
HEARTBEAT_S = 5.0  # how often an owner renews its lease (and notices a cancel)
POLL_S = 2.0  # how often `hpo serve` looks for queued studies
MAX_STUDIES = 8  # studies one `hpo serve` runs at once
KEEP_IDLE_WORKERS_S = 60.0  # a finished study's workers wait this long for a next study of their kind
# how long a worker may take to be ready for a trial (placed, process started, objective imported)
# before hpo gives up on it; a trial's own time (trial_timeout) counts only once it is ready
WORKER_START_S = 300.0
KEEP_BEST_CHECKPOINTS = 1  # checkpoints of the best completed trials kept after a study ends

STATE_VAR = "HPO_STATE_DIR"  # default: $XDG_STATE_HOME/hpo, else ~/.local/state/hpo
ARTIFACTS_VAR = "HPO_ARTIFACTS"  # the artifact store (checkpoints) when the spec names none


def state_dir() -> Path:
    """Where hpo keeps what outlives a process on this machine (Ray runtimes it started, and the
    checkpoints of studies on a server database unless an artifact store is named)."""
    explicit = os.environ.get(STATE_VAR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "hpo"
