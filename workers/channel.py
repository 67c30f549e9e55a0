"""The report channel: one small async Ray actor per driver process, between running trials and
the drivers of that process.

Each run of a study has a mailbox in it (made by its first report or take). Workers call
``began`` when a trial starts on them and ``report`` for each report, waiting for the decision;
the driver long-polls ``take`` for its mailbox's reports (and began notices),
asks the pruner, and answers with ``decide``; ``close`` ends the mailbox for good (a worker still
reporting to it is told to stop).
Every study of an `hpo serve` (and every study a notebook runs) shares the one actor, so a study
adds no process to start and no memory to Ray. The actor is owned by the driver process, so it
dies with it and a worker of a dead driver fails instead of training on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

import ray

Report = tuple[str, int, float]  # (attempt key, step, value)

log = logging.getLogger("hpo.workers.channel")


@dataclass
class _Mailbox:
    pending: list[Report] = field(default_factory=list)
    began: list[str] = field(default_factory=list)  # attempts whose worker began running them
    waiters: dict[tuple[str, int], asyncio.Future] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@ray.remote(num_cpus=0, max_restarts=0)
class ReportChannel:
    def __init__(self) -> None:
        self._boxes: dict[str, _Mailbox] = {}
        self._closed: set[str] = set()  # a few bytes per study run, for the process's lifetime

    def _box(self, box: str) -> _Mailbox | None:
        if box in self._closed:
            return None
        mailbox = self._boxes.get(box)
        if mailbox is None:
            mailbox = self._boxes[box] = _Mailbox()
        return mailbox

    async def report(self, box: str, key: str, step: int, value: float, wait: bool = True) -> bool:
        """Called by a worker; returns True when the trial must stop.

        ``wait``: wait for the driver's prune decision. Without a pruner (or with several
        objectives) there is nothing to wait for: the report is only queued for the driver to
        store, and the answer is False unless the mailbox is closed.
        """
        mailbox = self._box(box)
        if mailbox is None:  # its driver is done with the study: nobody stores this trial
            return True
        mailbox.pending.append((key, step, value))
        mailbox.arrived.set()
        if not wait:
            return False
        future = asyncio.get_running_loop().create_future()
        mailbox.waiters[(key, step)] = future
        return await future

    async def began(self, box: str, key: str) -> None:
        """Called by a worker once it is ready for trial ``key`` (the objective imported), just
        before the trial runs: the driver counts the trial's time from here."""
        mailbox = self._box(box)
        if mailbox is not None:
            mailbox.began.append(key)
            mailbox.arrived.set()

    async def take(self, box: str, timeout: float) -> tuple[list[Report], list[str]]:
        """Called by the driver: the reports and began notices that arrived, waiting up to
        ``timeout`` for one."""
        mailbox = self._box(box)
        if mailbox is None:
            return [], []
        if not mailbox.pending and not mailbox.began:
            try:
                await asyncio.wait_for(mailbox.arrived.wait(), timeout)
            except TimeoutError:
                pass
        reports, mailbox.pending = mailbox.pending, []
        began, mailbox.began = mailbox.began, []
        mailbox.arrived.clear()
        return reports, began

    async def decide(self, box: str, decisions: list[tuple[str, int, bool]]) -> None:
        """Called by the driver: wake each waiting worker with its prune decision."""
        mailbox = self._boxes.get(box)
        if mailbox is None:
            return
        for key, step, stop in decisions:
            future = mailbox.waiters.pop((key, step), None)
            if future is not None and not future.done():
                future.set_result(stop)

    async def close(self, box: str) -> None:
        """Called by the driver when it stops: workers still waiting on ``box`` are told to stop."""
        self._closed.add(box)
        mailbox = self._boxes.pop(box, None)
        if mailbox is None:
            return
        for future in mailbox.waiters.values():
            if not future.done():
                future.set_result(True)
        mailbox.arrived.set()  # a take still waiting returns at once

    async def boxes(self) -> int:
        """How many mailboxes are open (for tests and diagnostics)."""
        return len(self._boxes)


_lock = threading.Lock()
_shared: tuple[tuple[str, str, str], ray.actor.ActorHandle] | None = None  # (connection, channel)
PING_TIMEOUT_S = 10.0


def process_channel() -> ray.actor.ActorHandle:
    """This process's channel in the Ray runtime it is connected to, created on first use.

    Keyed by the connection (GCS address, node and job), so a process that shuts Ray down and
    starts or joins another gets a new channel instead of a handle to a dead one. A channel made
    earlier is pinged first (a millisecond): one that died meanwhile is replaced. One that does
    not answer in time is kept: its process may still be starting on a busy machine, and the
    studies of this process that already use it would lose their reports with it. A new one is
    not waited for: trials start while its process starts, and their reports queue meanwhile.
    """
    global _shared
    ctx = ray.get_runtime_context()
    key = (ctx.gcs_address, ctx.get_node_id(), ctx.get_job_id())
    with _lock:
        handle = _shared[1] if _shared is not None and _shared[0] == key else None
        if handle is not None:
            try:
                ray.get(handle.boxes.remote(), timeout=PING_TIMEOUT_S)
            except ray.exceptions.RayActorError:
                handle = None
            except ray.exceptions.GetTimeoutError:  # not dead: starting, or its process is starved
                log.warning("the report channel did not answer within %g s; keeping it", PING_TIMEOUT_S)
        if handle is None:
            handle = ReportChannel.remote()
            _shared = (key, handle)
        return handle
