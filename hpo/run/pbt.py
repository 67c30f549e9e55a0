"""Population Based Training, decided by the driver like pruning is.

Each member of the population trains in segments of ``interval`` steps; a segment is one Optuna
trial whose ``hpo:pbt`` attribute says where it belongs (member, generation, its first and last
step, the trial whose checkpoint it starts from, what exploit/explore changed), so
optuna-dashboard shows the whole population. Generations are synchronous: once every live
member has finished segment g, the bottom quantile copies the newest checkpoint (and values) of
a random top-quantile member and explores, the rest continue their own, and generation g + 1 is
queued (Optuna's enqueue: fixed values, lineage attributes). A member whose objective returns
(it trained to its end) is done; the study ends when all are. Everything is rebuilt from the
store on a new owner (``recover``), so a killed serve's successor continues the population.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo.run.pb2 import GpBandit, Observation
from hpo.run.schedule import Enqueue, Schedule, SegmentEnd
from hpo.spec.schedules import PbtOptions
from hpo.spec.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from hpo.store.attrs import INFO_ATTR, LINEAGE_ATTR, PBT_ATTR, RESUMES_ATTR


@dataclass
class _Member:
    lineage: int  # its first segment's trial number: the folder of its checkpoints
    results: dict[int, tuple[float, int, dict[str, Any]]] = field(default_factory=dict)  # gen -> (value, trial, params)
    done: bool = False  # trained to its end (its objective returned)
    lost: bool = False  # a segment failed for good


class PopulationBasedTraining(Schedule):
    def __init__(self, options: PbtOptions, space: SearchSpace, maximize: bool, seed: int,
                 bandit: bool = False) -> None:
        """``bandit``: PB2, explore with a GP bandit (numeric mutations) instead of perturbing."""
        self.options, self.space, self.maximize = options, space, maximize
        self.rng = random.Random(seed)
        numeric = {n: p for n, p in space.params.items()
                   if n in (options.mutations or []) and isinstance(p, (FloatParam, IntParam))}
        self.bandit = GpBandit(numeric, self.rng) if bandit and numeric else None
        # segment trial -> (value, parent trial, generation, values): what PB2 learns from
        self._scores: dict[int, tuple[float, int | None, int, dict[str, Any]]] = {}
        self.members: dict[int, _Member] = {}  # by member index
        self.queued = 0  # segments enqueued (or re-queued) and not yet dispatched
        self.formed = 0  # the newest generation queued (0: the first, sampled)

    # -- what the driver asks -------------------------------------------------------------

    def owns(self, attrs: dict[str, Any]) -> bool:
        return PBT_ATTR in attrs

    def ready(self) -> bool:
        """Whether a segment may be dispatched now (a queued one, or a new member to sample)."""
        return self.queued > 0 or len(self.members) < self.options.population

    def dispatched(self, trial_number: int, attrs: dict[str, Any]) -> dict[str, Any] | None:
        """A trial was asked; its segment attributes to set when it is a new member (else None)."""
        if PBT_ATTR in attrs:
            self.queued = max(0, self.queued - 1)
            return None
        member = len(self.members)
        self.members[member] = _Member(lineage=trial_number)
        return {PBT_ATTR: self._segment(member, 0, parent=None)}

    def requeued(self) -> None:
        """A segment was queued again (a retry, a stopped trial)."""
        self.queued += 1

    def stops(self, trial_number: int, attrs: dict[str, Any], step: int, value: float) -> bool:
        """Whether ``step`` is its segment's last: the worker stops there (its checkpoint kept)."""
        segment = attrs.get(PBT_ATTR)
        if segment is None or step < segment["end"]:
            return False
        return self.options.steps is None or step < self.options.steps - 1  # the last step: it returns

    def segment_end(self, trial_number: int, attrs: dict[str, Any], last_step: int | None) -> SegmentEnd | None:
        """A segment stopped at its end is COMPLETE, with its value there."""
        stopped = last_step is not None and self.stops(trial_number, attrs, last_step, 0.0)
        return "complete" if stopped else None

    def finished(self, trial: FrozenTrial, info: dict[str, Any]) -> list[Enqueue]:
        if trial.state == TrialState.COMPLETE:
            return self._finished(trial, trial.value, bool(info.get("trained_out")))
        if trial.state == TrialState.FAIL and info.get("retried"):
            return []  # its retry goes on
        return self._finished(trial, None, False)

    def goes_on(self, trial: FrozenTrial, info: dict[str, Any]) -> bool:
        return trial.state == TrialState.COMPLETE and not info.get("trained_out") or bool(info.get("retried"))

    def _finished(self, trial: FrozenTrial, value: float | None, trained_out: bool) -> list[Enqueue]:
        """A segment ended (COMPLETE with ``value``, or failed for good: None); the segments of
        the next generation when this completed the current one."""
        segment = trial.user_attrs[PBT_ATTR]
        member = self.members.get(segment["member"])
        if member is None:
            return []
        if value is None:
            member.lost = True
        else:
            member.results[segment["generation"]] = (value, trial.number, dict(trial.params))
            self._scores[trial.number] = (value, segment.get("parent"), int(segment["generation"]), dict(trial.params))
            member.done = member.done or trained_out
        return self._next_generation()

    # -- generations ----------------------------------------------------------------------

    def _live(self) -> dict[int, _Member]:
        return {i: m for i, m in self.members.items() if not m.lost}

    def _next_generation(self) -> list[Enqueue]:
        if len(self.members) < self.options.population:
            return []
        live = self._live()
        going = {i: m for i, m in live.items() if not m.done}
        if not going:
            return []
        generation = max(max(m.results, default=-1) for m in going.values())
        if any(generation not in m.results for m in going.values()):
            return []  # some member has not finished this generation yet
        if generation + 1 <= self.formed:
            return []  # already queued (its segments may be running)
        # rank every member that reached this generation (done ones are not donors: their
        # checkpoints follow the keep-best policy)
        ranked = sorted(going, key=lambda i: going[i].results[generation][0], reverse=self.maximize)
        n = max(1, math.floor(len(ranked) * self.options.quantile)) if len(ranked) >= 2 else 0
        top, bottom = ranked[:n], set(ranked[len(ranked) - n:]) if n else set()
        exploits = {i: self.rng.choice(top) for i in ranked if i in bottom and top}
        chosen = self._bandit_values(generation + 1, [going[e].results[generation][2] for e in exploits.values()])
        queue: list[Enqueue] = []
        for i in ranked:
            value, trial_number, params = going[i].results[generation]
            copy = None
            changed: dict[str, list[Any]] = {}
            exploit = None
            if i in exploits:
                exploit = exploits[i]
                _, donor_trial, donor_params = going[exploit].results[generation]
                new = self._explore(donor_params, chosen.pop(0) if chosen else None)
                changed = {k: [params.get(k), v] for k, v in new.items() if params.get(k) != v}
                params, trial_number = new, donor_trial
                copy = (going[exploit].lineage, going[i].lineage)
            attrs = {PBT_ATTR: self._segment(i, generation + 1, parent=trial_number, exploit=exploit, changed=changed),
                     LINEAGE_ATTR: going[i].lineage, RESUMES_ATTR: trial_number}
            queue.append((params, attrs, copy))
        self.queued += len(queue)
        self.formed = generation + 1
        return queue

    def _segment(self, member: int, generation: int, parent: int | None, exploit: int | None = None,
                 changed: dict[str, list[Any]] | None = None) -> dict[str, Any]:
        interval, end = self.options.interval, (generation + 1) * self.options.interval - 1
        if self.options.steps is not None:
            end = min(end, self.options.steps - 1)
        return {"member": member, "generation": generation, "start": generation * interval,
                "end": end, "parent": parent, "exploit": exploit,
                "changed": changed or {}}

    def _bandit_values(self, generation: int, donors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """PB2: the bandit's values for each exploiting member (empty under plain PBT)."""
        if self.bandit is None or not donors:
            return []
        history = []
        for value, parent, segment_generation, params in self._scores.values():
            if parent is None or parent not in self._scores:
                continue  # a first segment: no change to learn from
            change = value - self._scores[parent][0]
            if all(n in params for n in self.bandit.names):
                history.append(Observation(values={n: params[n] for n in self.bandit.names},
                                           generation=segment_generation,
                                           change=change if self.maximize else -change))
        return self.bandit.choose(history, generation, donors)

    def _explore(self, params: dict[str, Any], chosen: dict[str, Any] | None = None) -> dict[str, Any]:
        new = dict(params)
        space = self.space.params
        for name in self.options.mutations or []:
            if name not in new:
                continue
            param = space[name]
            if chosen is not None and name in chosen:
                new[name] = chosen[name]  # PB2: the bandit chose it
            elif self.rng.random() < self.options.resample_probability:
                new[name] = self._resample(param)
            elif isinstance(param, CategoricalParam):
                index = next(i for i, c in enumerate(param.choices) if c == new[name])
                index = min(len(param.choices) - 1, max(0, index + self.rng.choice((-1, 1))))
                new[name] = param.choices[index]
            else:
                new[name] = self._clip(param, new[name] * self.rng.choice(self.options.perturb))
        return new

    def _resample(self, param: Any) -> Any:
        if isinstance(param, CategoricalParam):
            return self.rng.choice(param.choices)
        low, high = param.low, param.high
        if param.log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            value = self.rng.uniform(low, high)
        return self._clip(param, value)

    @staticmethod
    def _clip(param: FloatParam | IntParam, value: float) -> Any:
        value = min(param.high, max(param.low, value))
        if isinstance(param, IntParam):
            return int(param.low + round((value - param.low) / param.step) * param.step)
        if param.step:
            return min(param.high, param.low + round((value - param.low) / param.step) * param.step)
        return float(value)

    # -- a new owner ----------------------------------------------------------------------

    def recover(self, trials: list[FrozenTrial]) -> list[Enqueue]:
        """Rebuild the population from the store (after ``_recover`` re-queued what was
        RUNNING); the next generation when the last one was complete but never queued."""
        self.queued = 0  # counted again from the store, re-queued trials included
        for trial in sorted(trials, key=lambda t: t.number):
            segment = trial.user_attrs.get(PBT_ATTR)
            if segment is None:
                continue
            member = self.members.setdefault(segment["member"],
                                             _Member(lineage=int(trial.user_attrs.get(LINEAGE_ATTR, trial.number))))
            self.formed = max(self.formed, int(segment["generation"]))
            if trial.state == TrialState.WAITING:
                self.queued += 1
            elif trial.state == TrialState.COMPLETE and trial.value is not None:
                member.results[segment["generation"]] = (trial.value, trial.number, dict(trial.params))
                self._scores[trial.number] = (trial.value, segment.get("parent"), int(segment["generation"]),
                                              dict(trial.params))
                member.done = member.done or bool((trial.user_attrs.get(INFO_ATTR) or {}).get("trained_out"))
            elif trial.state == TrialState.FAIL and not (trial.user_attrs.get(INFO_ATTR) or {}).get("retried"):
                member.lost = True
        return self._next_generation()
