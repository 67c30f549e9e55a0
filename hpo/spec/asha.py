"""``asha``: successive halving with the stopping rule of Ray Tune's ASHAScheduler.

Rungs lie at steps ``min_resource * reduction_factor ** k`` (k = 0, 1, ...). A trial is judged
once per rung, at its first report at or past it (at the highest rung not yet judged, if a report
skips steps), against the values that other trials reported when they were judged there: it stops
unless its value is at or above the ``1 - 1 / reduction_factor`` quantile of those values (linear
interpolation; the mirror quantile when minimizing). The first trial at a rung goes on.

Optuna's ``successive_halving`` keeps a trial only if it ranks in the top
``max(1, n // reduction_factor)`` of the ``n`` trials at the rung, itself included, so the first
few trials at each rung must each be the best so far; here (reduction factor 3, two trials
before it) a trial goes on if it is two thirds of the way from the worse of them to the better.
On the same curves and options asha prunes less and trains more, as Ray Tune does.
A study moved from Ray Tune keeps its schedule: ``grace_period`` is ``min_resource`` (in the
steps the objective reports), ``reduction_factor`` the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import optuna
from optuna.study import StudyDirection


class AshaPruner(optuna.pruners.BasePruner):
    def __init__(self, min_resource: int = 1, reduction_factor: float = 4) -> None:
        if isinstance(min_resource, bool) or not isinstance(min_resource, int) or min_resource < 1:
            raise ValueError(f"min_resource must be an integer of at least 1, not {min_resource!r}")
        if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, (int, float)) \
                or not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be a number above 1, not {reduction_factor!r}")
        self._min_resource = min_resource
        self._factor = float(reduction_factor)
        # what each trial was judged on, by (study, number, start) and the count of its values: a
        # decision reads every trial's, and a finished trial's never changes
        self._seen: dict[tuple[str, int, object], tuple[int, dict[int, float]]] = {}

    def _rung_at(self, step: int) -> int:
        """The highest rung at or below ``step`` (-1: below the first)."""
        rung = -1
        while self._min_resource * self._factor ** (rung + 1) <= step:
            rung += 1
        return rung

    def judged(self, values: Mapping[int, float]) -> tuple[dict[int, float], int | None]:
        """The value a trial with these intermediate values was judged on at each rung, and the
        rung its last report was judged at (None: that report met no rung)."""
        out: dict[int, float] = {}
        rung: int | None = None
        for step in sorted(values):
            rung = self._rung_at(step)
            while rung >= 0 and rung in out:
                rung -= 1
            if rung >= 0:
                out[rung] = values[step]
            else:
                rung = None
        return out, rung

    def _judged_of(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[int, float]:
        key = (study.study_name, trial.number, trial.datetime_start)
        count = len(trial.intermediate_values)
        seen = self._seen.get(key)
        if seen is None or seen[0] != count:
            seen = (count, self.judged(trial.intermediate_values)[0])
            self._seen[key] = seen
        return seen[1]

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step is None:
            return False
        value = trial.intermediate_values[trial.last_step]
        if math.isnan(value):
            return True  # a diverged trial stops (Ray Tune lets a NaN go on)
        _, rung = self.judged(trial.intermediate_values)
        if rung is None:
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        earlier = [
            sign * v
            for other in study.get_trials(deepcopy=False)
            if other.number != trial.number
            for v in [self._judged_of(study, other).get(rung)]
            if v is not None and not math.isnan(v)
        ]
        if not earlier:
            return False
        return bool(sign * value < np.percentile(earlier, (1 - 1 / self._factor) * 100))
