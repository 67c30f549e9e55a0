"""When the driver keeps one trial prepared ahead of a free slot.

A trial asked before a slot frees is sampled without the result of the trial whose end frees it:
with n slots the sampler decides with n trials unfinished instead of n - 1, so it learns from one
result fewer (on Hartmann6 with 2 slots and 40 TPE trials that costs regret:
benchmarks/ask_ahead.py). It pays only where the ask (sampling, storing the trial) would hold a
freed slot idle for a noticeable share of a trial's time: many short trials. So a trial is
prepared ahead only where the recent asks took at least ``share`` of the recent trials' run
time, both on the driver's clock; before a first trial has ended, none is.
"""

from __future__ import annotations

from collections import deque
from statistics import median


class AskAhead:
    def __init__(self, share: float = 0.02, window: int = 10) -> None:
        self.share = share
        self._asks: deque[float] = deque(maxlen=window)
        self._runs: deque[float] = deque(maxlen=window)

    @classmethod
    def always(cls) -> AskAhead:
        """One trial prepared whenever the slots allow it, whatever the asks take."""
        return cls(share=0.0)

    def asked(self, seconds: float) -> None:
        """One ask took ``seconds``, from the sampler's ask to the trial stored."""
        self._asks.append(seconds)

    def ran(self, seconds: float) -> None:
        """A launched trial ended after ``seconds`` (pruned, failed or complete)."""
        self._runs.append(seconds)

    def wanted(self) -> bool:
        if self.share <= 0:
            return True
        if not self._asks or not self._runs:
            return False
        return median(self._asks) >= self.share * median(self._runs)
