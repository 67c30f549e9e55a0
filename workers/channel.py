"""The report channel: a small async Ray actor between running trials and their driver.

Workers call ``report`` and wait for the decision; the driver long-polls ``take`` for pending
reports, asks the pruner, and answers with ``decide``. The actor is owned by the driver, so it
dies with it and a worker of a dead driver fails instead of training on forever.
"""

from __future__ import annotations

import asyncio

import ray

Report = tuple[str, int, float]  # (attempt key, step, value)


@ray.remote(num_cpus=0, max_restarts=0)
class ReportChannel:
    def __init__(self, decisions: bool = True) -> None:
        """``decisions``: workers wait for a prune decision on each report. Without a pruner
        (or with several objectives) there is nothing to wait for: reports are only queued
        for the driver to store, and the worker goes on at once."""
        self._decisions = decisions
        self._pending: list[Report] = []
        self._waiters: dict[tuple[str, int], asyncio.Future] = {}
        self._arrived = asyncio.Event()

    async def report(self, key: str, step: int, value: float) -> bool:
        """Called by a worker; returns True when the trial must stop."""
        self._pending.append((key, step, value))
        self._arrived.set()
        if not self._decisions:
            return False
        future = asyncio.get_running_loop().create_future()
        self._waiters[(key, step)] = future
        return await future

    async def take(self, timeout: float) -> list[Report]:
        """Called by the driver: the reports that arrived, waiting up to ``timeout`` for one."""
        if not self._pending:
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        reports, self._pending = self._pending, []
        self._arrived.clear()
        return reports

    async def decide(self, decisions: list[tuple[str, int, bool]]) -> None:
        """Called by the driver: wake each waiting worker with its prune decision."""
        for key, step, stop in decisions:
            future = self._waiters.pop((key, step), None)
            if future is not None and not future.done():
                future.set_result(stop)
