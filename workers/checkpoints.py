"""A trial's checkpoints in the artifact store: a folder (local, or a path every node mounts).

Workers write and read them; the driver only tells a worker which folder belongs to its trial
(never a database URL) and removes folders that the study's policy no longer keeps.

Layout of one trial's folder (all attempts of a trial, and all segments of a PBT member, share
one): ``step-00000007/`` holds the checkpoint taken at step 7 as ``state.pt`` (torch.save, when
torch is loaded), ``state.pkl`` (pickle), ``state.bin`` (bytes) or ``files/`` (a file or folder
the objective saved), and ``curve.json`` the values the trial reported up to that step (so a
trial that continues it has its whole learning curve, even reports its driver never stored). A
checkpoint appears at once or not at all (written beside, then renamed); only the newest is kept.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

PREFIX = "step-"


def _step_of(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    try:
        return int(name[len(PREFIX):])
    except ValueError:
        return None


class CheckpointFolder:
    """The checkpoints of one trial (one lineage: its retries and PBT segments continue it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def steps(self) -> list[int]:
        """Steps that have a complete checkpoint, oldest first."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(s for s in map(_step_of, names) if s is not None)

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, state: Any, step: int, curve: dict[int, float] | None = None) -> Path:
        """Write ``state`` as the checkpoint of ``step`` and drop older ones."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            _write(state, tmp)
            _write_curve(tmp, curve or {})
            final = self.path / f"{PREFIX}{step:08d}"
            if final.exists():  # the same step saved again (a retried attempt): the newer wins
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.steps():
            if old < step:
                shutil.rmtree(self.path / f"{PREFIX}{old:08d}", ignore_errors=True)
        return final

    def record_curve(self, step: int, curve: dict[int, float]) -> None:
        """Keep the values reported so far with the checkpoint of ``step`` (the report of the
        step itself comes after its checkpoint)."""
        folder = self.path / f"{PREFIX}{step:08d}"
        if folder.is_dir():
            _write_curve(folder, curve)

    def curve(self, step: int) -> dict[int, float]:
        """The values reported up to the checkpoint of ``step``, as kept with it."""
        try:
            with open(self.path / f"{PREFIX}{step:08d}" / "curve.json") as f:
                return {int(k): float(v) for k, v in json.load(f).items()}
        except (OSError, ValueError):
            return {}

    def load(self, map_location: str = "cpu") -> tuple[Any, int] | None:
        """(state, step) of the newest checkpoint, or None when the trial has none."""
        step = self.latest()
        if step is None:
            return None
        return _read(self.path / f"{PREFIX}{step:08d}", map_location), step


def _write(state: Any, folder: Path) -> None:
    if isinstance(state, (bytes, bytearray, memoryview)):
        (folder / "state.bin").write_bytes(bytes(state))
    elif isinstance(state, Path):  # a file or folder the objective wrote: copied in
        target = folder / "files" / state.name
        target.parent.mkdir()
        if state.is_dir():
            shutil.copytree(state, target)
        else:
            shutil.copy2(state, target)
    elif "torch" in sys.modules:  # tensors, state dicts: torch's format keeps them compact
        sys.modules["torch"].save(state, folder / "state.pt")
    else:
        with open(folder / "state.pkl", "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)


def _write_curve(folder: Path, curve: dict[int, float]) -> None:
    tmp = folder / f".curve-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({str(k): v for k, v in sorted(curve.items())}))
    os.replace(tmp, folder / "curve.json")


def _read(folder: Path, map_location: str) -> Any:
    if (folder / "state.bin").exists():
        return (folder / "state.bin").read_bytes()
    files = folder / "files"
    if files.is_dir():
        return next(files.iterdir())
    if (folder / "state.pt").exists():
        import torch

        return torch.load(folder / "state.pt", map_location=map_location, weights_only=False)
    with open(folder / "state.pkl", "rb") as f:
        return pickle.load(f)
