"""The user attributes hpo sets on Optuna trials (what optuna-dashboard shows of a run), and
how to read them. Written by the run side (hpo.run.recorder), read by the read side."""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

ERROR_ATTR = "hpo:error"
INFO_ATTR = "hpo:run"
ATTEMPT_ATTR = "hpo:attempt"
RETRY_OF_ATTR = "hpo:retry_of"
# The trial whose checkpoint folder this one writes to and resumes from: the first trial of its
# lineage (a retry's original, a PBT member's first segment); absent: the trial's own number.
LINEAGE_ATTR = "hpo:lineage"
# The trial this one continues (a retry: the attempt before; PBT: the segment whose checkpoint it
# starts from). Its learning curve up to the checkpoint's step is copied in, so the trial shows
# one continuous curve.
RESUMES_ATTR = "hpo:resumes"
# Set on a FAIL trial that was stopped rather than failed (cancelled, handed back, interrupted,
# its owner gone): Optuna has no such state; hpo counts these apart from failures.
STOPPED_ATTR = "hpo:stopped"


def was_stopped(trial: FrozenTrial) -> bool:
    """A FAIL trial that hpo stopped (cancel, hand-back, Ctrl-C/SIGTERM, lost owner): not a failure."""
    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get(STOPPED_ATTR))
PBT_ATTR = "hpo:pbt"  # a Population Based Training segment: member, generation, steps, parent, changes
# A segment of successive halving / Hyperband with promotion: its bracket, and the rung it was
# promoted from (None: the configuration's first segment)
PROMOTION_ATTR = "hpo:promotion"
