"""The driver's checkpoint policy: which folder each trial writes to, and which folders a study
keeps. Workers write checkpoints (workers.checkpoints); the driver decides what outlives a trial:

* a trial that goes on (retried, handed back, a PBT member's next segment) keeps its newest;
* a pruned or failed trial that does not go on loses its checkpoints at once;
* of the completed trials, the best ``keep_best`` keep theirs (in a multi-objective study: up to
  ``keep_best`` trials of its Pareto front, chosen when the study ends).
When a study ends (completed or failed, not when stopped to resume later) every folder that the
policy does not keep is removed, so leftovers of crashed owners do not fill disks either, and
the kept checkpoints are published as the study's Optuna artifacts (``hpo.store.published``).
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.store.artifacts import BucketArtifacts, StudyArtifacts
from hpo.store.attrs import INFO_ATTR, LINEAGE_ATTR
from hpo.store.published import prepare, publish

log = logging.getLogger("hpo.run.driver")


def lineage_of(trial: FrozenTrial) -> int:
    """The checkpoint folder a trial writes to: its lineage's first trial."""
    return int(trial.user_attrs.get(LINEAGE_ATTR, trial.number))


class CheckpointKeeper:
    def __init__(self, artifacts: StudyArtifacts | BucketArtifacts, keep_best: int, directions: list[str],
                 study: optuna.Study | None = None) -> None:
        """``study``: where the kept checkpoints are published when it ends (None: not)."""
        self.artifacts = artifacts
        self.study = study
        self.keep_best = keep_best
        self._maximize = directions[0] == "maximize" if len(directions) == 1 else None
        self._best: list[tuple[float, int]] = []  # (value, lineage), best first
        self._preparing = False

    def folder(self, lineage: int) -> str:
        return self.artifacts.location(lineage)

    def latest(self, lineage: int) -> int | None:
        return self.artifacts.checkpoints(lineage).latest()

    def recover(self, trials: list[FrozenTrial]) -> None:
        """Learn the best completed trials of earlier runs of the study, and remove the folders
        that none of its trials wrote: a study deleted and created again under the same name can
        get the same Optuna id (SQLite reuses the highest one; a database dropped and created
        again starts from 1), hence the same folder, and a new trial must never resume an old
        study's model. A lineage is this study's once hpo ran one of its trials (each records
        its run; one its owner left RUNNING is failed, with that record, before this)."""
        ours = {lineage_of(t) for t in trials if INFO_ATTR in t.user_attrs}
        strays = [lineage for lineage in self.artifacts.lineages() if lineage not in ours]
        for lineage in strays:
            self.artifacts.remove(lineage)
        if strays:
            log.warning("removed %d checkpoint folders in %s that no trial of this study wrote (left by an "
                        "earlier study of the same name and id, since deleted)", len(strays), self.artifacts.root)
        for trial in trials:
            self._rank(trial)

    def ended(self, trial: FrozenTrial, goes_on: bool) -> None:
        """A trial finished as ``trial`` says; ``goes_on``: another trial continues its lineage."""
        if goes_on:
            return
        lineage = lineage_of(trial)
        if trial.state == TrialState.COMPLETE and self._maximize is None:
            return  # multi-objective: the Pareto front is known when the study ends
        if trial.state != TrialState.COMPLETE or not self._rank(trial):
            self.artifacts.remove(lineage)

    def _rank(self, trial: FrozenTrial) -> bool:
        """Enter a completed trial among the best; False when it is not kept. The one it pushes
        out of the best loses its checkpoints."""
        if self._maximize is None or trial.state != TrialState.COMPLETE or trial.value is None:
            return False
        key = -trial.value if self._maximize else trial.value
        lineage = lineage_of(trial)
        self._best = sorted([b for b in self._best if b[1] != lineage] + [(key, lineage)])
        if len(self._best) <= self.keep_best:
            return True
        _, dropped = self._best.pop()
        if dropped != lineage:
            self.artifacts.remove(dropped)
        return dropped != lineage

    def ending(self) -> None:
        """The study runs its last trials: get ready to publish what it keeps, if it keeps any
        (an objective that does not checkpoint has no folder; looked at once)."""
        if self.study is None or self.keep_best == 0 or self._preparing:
            return
        self._preparing = True
        if self.artifacts.lineages():
            prepare()

    def study_ended(self, trials: list[FrozenTrial], pareto: list[FrozenTrial]) -> int:
        """Remove every folder the policy does not keep; how many were removed."""
        if self._maximize is None:
            keep = {lineage_of(t) for t in pareto[: self.keep_best]}
        else:
            keep = {lineage for _, lineage in self._best[: self.keep_best]}
        # a trial still queued (a retry of a study that stopped at its failure limit) may resume
        keep |= {lineage_of(t) for t in trials if t.state == TrialState.WAITING}
        removed = 0
        for lineage in self.artifacts.lineages():
            if lineage not in keep:
                self.artifacts.remove(lineage)
                removed += 1
        if removed:
            log.debug("removed the checkpoints of %d finished trials", removed)
        if self.study is not None:
            self._publish(keep, trials)
        return removed

    def _publish(self, keep: set[int], trials: list[FrozenTrial]) -> None:
        """Publish each kept lineage's checkpoint under its last completed trial."""
        last: dict[int, int] = {}
        for trial in trials:
            if trial.state == TrialState.COMPLETE and lineage_of(trial) in keep:
                last[lineage_of(trial)] = max(last.get(lineage_of(trial), -1), trial.number)
        wanted = {}
        for lineage, number in last.items():
            step = self.latest(lineage)
            if step is not None:
                wanted[number] = (self.artifacts.checkpoints(lineage), step)
        assert self.study is not None
        try:
            publish(self.study, self.artifacts.root, wanted)
        except Exception as exc:  # noqa: BLE001 - the checkpoints stay; only their listing is missing
            log.warning("could not publish the kept checkpoints as study artifacts: %s: %s", type(exc).__name__, exc)
