"""Successive halving and Hyperband with promotion (asynchronous, as ASHA promotes): a trial that
reaches a rung and is not in the top ``1 / reduction_factor`` of the trials there *pauses*
instead of being stopped for good. Its checkpoint is kept, and as soon as enough trials reached
the rung after it for it to rank in the top share, it is promoted: a new Optuna trial of the same
lineage, queued with the same values, resumes from that checkpoint and trains on to the next rung.

A paused segment is recorded PRUNED (Optuna's samplers read it as a stopped trial, which it is
until promoted) with ``paused_at`` in its run info; each segment carries ``hpo:promotion``
(bracket, and the rung it was promoted from). ``n_trials`` counts configurations. Hyperband runs
brackets with early-stopping rates 0 .. n-1, each configuration in the bracket that is furthest
behind its share. Everything is rebuilt from the store on a new owner (``recover``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo.run.schedule import Enqueue, Schedule, SegmentEnd
from hpo.spec.schedules import PromotionOptions
from hpo.store.attrs import INFO_ATTR, LINEAGE_ATTR, PROMOTION_ATTR, RESUMES_ATTR, was_stopped


@dataclass
class _Lineage:
    bracket: int
    params: dict[str, Any] = field(default_factory=dict)
    rungs: dict[int, tuple[int, float]] = field(default_factory=dict)  # rung -> (step, value) there
    promoted: set[int] = field(default_factory=set)  # rungs it went on from
    paused: tuple[int, int] | None = None  # (rung, trial number) while it waits for promotion
    done: bool = False  # trained to its end, or failed for good


class PromotionSchedule(Schedule):
    def __init__(self, options: PromotionOptions, n_trials: int | None, maximize: bool) -> None:
        self.options, self.n_trials, self.maximize = options, n_trials, maximize
        self.rates = options.brackets  # each bracket's early-stopping rate
        self.lineages: dict[int, _Lineage] = {}  # by lineage (its first trial's number)
        self.queued = 0  # promotions and retries queued and not yet dispatched
        self._pausing: dict[int, int] = {}  # trial number -> the rung it was told to pause at

    def milestone(self, bracket: int, rung: int) -> int:
        """The step at which a trial of ``bracket`` reaches ``rung``."""
        return int(self.options.min_resource * self.options.reduction_factor ** (self.rates[bracket] + rung))

    # -- what the driver asks -------------------------------------------------------------

    def owns(self, attrs: dict[str, Any]) -> bool:
        return PROMOTION_ATTR in attrs

    def ready(self) -> bool:
        return self.queued > 0 or self.n_trials is None or len(self.lineages) < self.n_trials

    def dispatched(self, trial_number: int, attrs: dict[str, Any]) -> dict[str, Any] | None:
        if PROMOTION_ATTR in attrs:  # a promotion or a retry: its lineage exists
            self.queued = max(0, self.queued - 1)
            return None
        bracket = self._next_bracket()
        self.lineages[trial_number] = _Lineage(bracket=bracket)
        return {PROMOTION_ATTR: {"bracket": bracket, "from_rung": None}}

    def requeued(self) -> None:
        self.queued += 1

    def stops(self, trial_number: int, attrs: dict[str, Any], step: int, value: float) -> bool:
        lineage = self.lineages.get(int(attrs.get(LINEAGE_ATTR, trial_number)))
        if lineage is None or not math.isfinite(value):
            return False
        rung = 0
        while self.milestone(lineage.bracket, rung) <= step:
            lineage.rungs.setdefault(rung, (step, value))  # a resumed trial may know it already
            if rung not in lineage.promoted:
                if not self._in_top(lineage, rung):
                    self._pausing[trial_number] = rung
                    return True
                lineage.promoted.add(rung)  # it ranks in the top share as it arrives: it goes on
            rung += 1
        return False

    def resumed(self, trial_number: int, attrs: dict[str, Any], curve: dict[int, float]) -> None:
        lineage = self.lineages.get(int(attrs.get(LINEAGE_ATTR, trial_number)))
        if lineage is not None:  # a rung its checkpoint passed is decided at its first report
            self._learn_rungs(lineage, curve)

    def segment_end(self, trial_number: int, attrs: dict[str, Any], last_step: int | None) -> SegmentEnd | None:
        return "paused" if trial_number in self._pausing else None

    def finished(self, trial: FrozenTrial, info: dict[str, Any]) -> list[Enqueue]:
        lineage = self.lineages.get(int(trial.user_attrs.get(LINEAGE_ATTR, trial.number)))
        rung = self._pausing.pop(trial.number, None)
        if lineage is None:
            return []
        lineage.params = dict(trial.params)
        if trial.state == TrialState.PRUNED and rung is not None:
            lineage.paused = (rung, trial.number)
        elif not (trial.state == TrialState.FAIL and info.get("retried")):
            lineage.done = True  # trained to its end, or failed for good
        return self._promotions()

    def goes_on(self, trial: FrozenTrial, info: dict[str, Any]) -> bool:
        return info.get("paused_at") is not None or bool(info.get("retried"))

    def reported(self) -> list[Enqueue]:
        return self._promotions()  # a trial that reached a rung may lift a paused one into the top

    def unfinished(self) -> str | None:
        paused = sum(lin.paused is not None and not lin.done for lin in self.lineages.values())
        return f"{paused} paused trials were not promoted" if paused else None

    # -- rungs ----------------------------------------------------------------------------

    def _in_top(self, lineage: _Lineage, rung: int) -> bool:
        """Whether ``lineage`` ranks in the top ``1 / reduction_factor`` of its bracket's rung."""
        arrived = [(v, number) for number, other in self.lineages.items()
                   if other.bracket == lineage.bracket and rung in other.rungs
                   for v in [other.rungs[rung][1]]]
        top = len(arrived) // self.options.reduction_factor
        ranked = sorted(arrived, key=lambda a: (-a[0] if self.maximize else a[0], a[1]))
        return any(self.lineages[number] is lineage for _, number in ranked[:top])

    def _promotions(self) -> list[Enqueue]:
        """Paused trials that rank in the top share of their rung now, highest rung first."""
        queue: list[Enqueue] = []
        paused = [(lin.paused[0], number) for number, lin in self.lineages.items()
                  if lin.paused is not None and not lin.done]
        for rung, number in sorted(paused, key=lambda p: (-p[0], p[1])):
            lineage = self.lineages[number]
            if not self._in_top(lineage, rung):
                continue
            assert lineage.paused is not None
            _, paused_trial = lineage.paused
            lineage.paused = None
            lineage.promoted.add(rung)
            attrs = {PROMOTION_ATTR: {"bracket": lineage.bracket, "from_rung": rung},
                     LINEAGE_ATTR: number, RESUMES_ATTR: paused_trial}
            queue.append((dict(lineage.params), attrs, None))
        self.queued += len(queue)
        return queue

    def _next_bracket(self) -> int:
        """The bracket furthest behind its share of configurations (Hyperband's proportions:
        brackets that stop early get more, so each gets about the same compute)."""
        n, eta = len(self.rates), self.options.reduction_factor
        weights = [eta ** (n - 1 - b) / (n - b) for b in range(n)]
        counts = [0] * n
        for lineage in self.lineages.values():
            counts[lineage.bracket] += 1
        return min(range(n), key=lambda b: ((counts[b] + 1) / weights[b], b))

    # -- a new owner ----------------------------------------------------------------------

    def recover(self, trials: list[FrozenTrial]) -> list[Enqueue]:
        self.queued = 0  # counted again from the store, re-queued trials included
        for trial in sorted(trials, key=lambda t: t.number):
            segment = trial.user_attrs.get(PROMOTION_ATTR)
            if segment is None:
                continue
            number = int(trial.user_attrs.get(LINEAGE_ATTR, trial.number))
            info = trial.user_attrs.get(INFO_ATTR) or {}
            if number not in self.lineages and was_stopped(trial) and not info.get("retried"):
                continue  # prepared, never started: not one of the budget's configurations
            lineage = self.lineages.setdefault(number, _Lineage(bracket=int(segment["bracket"])))
            lineage.params = dict(trial.params)
            if segment.get("from_rung") is not None:
                lineage.promoted.add(int(segment["from_rung"]))
            self._learn_rungs(lineage, trial.intermediate_values)
            lineage.paused = None
            if trial.state == TrialState.WAITING:
                self.queued += 1
            elif trial.state == TrialState.PRUNED and info.get("paused_at") is not None:
                rungs = [r for r, (step, _) in lineage.rungs.items() if step <= int(info["paused_at"])]
                lineage.paused = (max(rungs), trial.number) if rungs else None
            elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                lineage.done = True
            elif trial.state == TrialState.FAIL and not info.get("retried"):
                lineage.done = True
        return self._promotions()

    def _learn_rungs(self, lineage: _Lineage, curve: dict[int, float]) -> None:
        if not curve:
            return
        steps = sorted(curve)
        rung = 0
        while self.milestone(lineage.bracket, rung) <= steps[-1]:
            reached = next(s for s in steps if s >= self.milestone(lineage.bracket, rung))
            lineage.rungs.setdefault(rung, (reached, curve[reached]))
            if steps[-1] > lineage.rungs[rung][0]:
                lineage.promoted.add(rung)  # it trained past the rung
            rung += 1
