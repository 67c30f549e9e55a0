"""The service's defaults, declared once: the CLI, the Python API, the serve loop and the driver
all read them from here."""

LEASE_S = 30.0  # a job whose owner stopped renewing for this long can be taken over
HEARTBEAT_S = 5.0  # how often an owner renews its lease (and notices a cancel)
POLL_S = 2.0  # how often `hpo serve` looks for queued studies
MAX_STUDIES = 8  # studies one `hpo serve` runs at once
KEEP_IDLE_WORKERS_S = 60.0  # a finished study's workers wait this long for a next study of their kind
