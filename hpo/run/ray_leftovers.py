"""Leftovers of a Ray runtime that hpo started and that died with it (`kill -9` of `hpo serve`).

A runtime hpo starts is a child of the hpo process; when that process is killed outright, the
raylet and GCS go with it but Ray's DashboardAgent and RuntimeEnvAgent stay, re-parented to init
(their process titles no longer name their session). hpo records each runtime it starts (its
owner's pid and start time, and the runtime's session folder) under its state folder; the next
runtime hpo starts on this machine stops the processes of every recorded runtime whose owner is
gone: those that still hold a file in its session folder or name it on their command line.
Only the user's own processes are readable, so only those are touched.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

from hpo.defaults import state_dir

log = logging.getLogger("hpo.ray")



def _records() -> Path:
    return state_dir() / "ray-runtimes"


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): tells a live owner from a reused pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def record(session_dir: str) -> Path | None:
    """Note that this process owns the runtime whose session folder is ``session_dir``."""
    if not session_dir.startswith("/"):
        return None
    try:
        folder = _records()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}.json"
        path.write_text(json.dumps({"pid": os.getpid(), "start": _start_ticks(os.getpid()),
                                    "session_dir": session_dir}))
        return path
    except OSError as exc:  # a read-only home must not stop a run
        log.debug("cannot record the Ray runtime: %s", exc)
        return None


def release(path: Path | None, grace_s: float = 2.0) -> None:
    """After ray.shutdown(): stop what is left of our own runtime (its agents outlive a raylet
    that died under them) and drop its record."""
    if path is None:
        return
    try:
        stop_session(json.loads(path.read_text())["session_dir"], grace_s)
    except (OSError, ValueError, KeyError):
        pass
    path.unlink(missing_ok=True)


def stop_session(session_dir: str, grace_s: float) -> int:
    """SIGTERM the processes of the runtime of ``session_dir``, SIGKILL them after ``grace_s``;
    returns how many there were. Looks again afterwards (a raylet still alive may have started a
    process meanwhile), a few rounds at most."""
    if not session_dir.startswith("/") or len(session_dir) < 8:
        return 0
    stopped: set[int] = set()
    for _ in range(3):
        found = processes_of(session_dir)
        if not found:
            break
        stopped.update(found)
        for victim in found:
            _signal(victim, signal.SIGTERM)
        _wait_gone(found, grace_s)
        for victim in found:
            if _alive(victim):
                _signal(victim, signal.SIGKILL)
        _wait_gone(found, 2.0)
    return len(stopped)


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _uses(pid: int, session_dir: str) -> bool:
    proc = Path(f"/proc/{pid}")
    try:
        if session_dir.encode() in (proc / "cmdline").read_bytes():
            return True
        for fd in (proc / "fd").iterdir():
            try:
                if os.readlink(fd).startswith(session_dir):
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def processes_of(session_dir: str) -> list[int]:
    """The user's live processes that belong to the runtime of ``session_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _uses(int(entry.name), session_dir):
            found.append(int(entry.name))
    return found


def stop_leftovers(grace_s: float = 5.0) -> int:
    """Stop the processes of recorded runtimes whose owner is gone; returns how many."""
    folder = _records()
    if not folder.is_dir():
        return 0
    stopped = 0
    for path in folder.glob("*.json"):
        try:
            data = json.loads(path.read_text())
            pid, start, session_dir = int(data["pid"]), data.get("start"), str(data["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        ticks = _start_ticks(pid)
        if ticks is not None and (start is None or ticks == start):
            continue  # its owner still runs it
        found = stop_session(session_dir, grace_s)
        if found:
            log.warning("stopped %d leftover processes of a Ray runtime whose owner (pid %d) died", found, pid)
        stopped += found
        path.unlink(missing_ok=True)
    return stopped


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass
