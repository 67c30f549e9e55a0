"""Where studies live: the database (engines, URLs, schema and migrations), hpo's jobs table,
the trial attributes hpo sets, and the owned (write-behind) Optuna storage with its adapter to
Optuna's internals. Imports nothing of the run side or the read side."""
