"""A trial's checkpoints in the artifact store: a folder (local, or a path every node mounts), or
a prefix of an object store (S3, GCS: ``workers.buckets``).

Workers write and read them; the driver only tells a worker which folder belongs to its trial
(never a database URL) and removes folders that the study's policy no longer keeps.

Layout of one trial's folder (all attempts of a trial, and all segments of a PBT member, share
one): ``step-00000007/`` holds the checkpoint taken at step 7 as ``state.pt`` (torch.save, when
torch is loaded), ``state.pkl`` (pickle), ``state.bin`` (bytes) or ``files/`` (a file or folder
the objective saved), and ``curve.json`` the values the trial reported up to that step (so a
trial that continues it has its whole learning curve, even reports its driver never stored). A
checkpoint appears at once or not at all (written beside, then renamed); only the newest is kept,
and the one before it until the newest is settled (see :class:`_Checkpoints`).
In an object store the keys are the same (``step-00000007/state.pt``, ``.../curve.json``); a step's
``curve.json`` is written last, and a step without it is not a checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from workers.buckets import Bucket, is_object_url

PREFIX = "step-"
CURVE = "curve.json"


def _step_of(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    try:
        return int(name[len(PREFIX):])
    except ValueError:
        return None


class _Checkpoints:
    """What both kinds share: which checkpoint a trial continues from, and which are dropped.

    A checkpoint is *settled* once the trial reported a value at its step or later (its
    ``curve.json`` then holds one). Objectives save a step before they report it, so a worker
    killed between the two leaves a newest checkpoint whose value was never reported; the
    settled one before it is kept until then, and a retry continues from that one (training
    one step again) instead of leaving a hole in the learning curve.
    """

    def steps(self) -> list[int]:
        raise NotImplementedError

    def _raw_curve(self, step: int) -> dict[int, float]:
        raise NotImplementedError

    def _remove(self, step: int) -> None:
        raise NotImplementedError

    def _settled(self, step: int) -> bool:
        return max(self._raw_curve(step), default=-1) >= step

    def latest(self) -> int | None:
        """The step a retry continues from: the newest settled checkpoint, else the newest."""
        steps = self.steps()
        return next((s for s in reversed(steps) if self._settled(s)), steps[-1] if steps else None)

    def curve(self, step: int) -> dict[int, float]:
        """The values reported up to the checkpoint of ``step``, as kept with it."""
        return {k: v for k, v in self._raw_curve(step).items() if k <= step}

    def _drop_before(self, step: int) -> None:
        """Remove the checkpoints older than ``step``, but the newest settled one while ``step``
        itself is not settled."""
        older = [s for s in self.steps() if s < step]
        keep = None if self._settled(step) else next((s for s in reversed(older) if self._settled(s)), None)
        for old in older:
            if old != keep:
                self._remove(old)

    def record_curve(self, step: int, curve: dict[int, float]) -> None:
        """Keep the values reported so far (up to a step at or after ``step``) with the checkpoint
        of ``step``: it is settled from now on, and the older one kept for it goes."""
        if step in self.steps():
            self._write_curve(step, curve)
            self._drop_before(step)

    def _write_curve(self, step: int, curve: dict[int, float]) -> None:
        raise NotImplementedError


class CheckpointFolder(_Checkpoints):
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
        self._drop_before(step)
        return final

    def _write_curve(self, step: int, curve: dict[int, float]) -> None:
        folder = self.path / f"{PREFIX}{step:08d}"
        if folder.is_dir():
            _write_curve(folder, curve)

    def _raw_curve(self, step: int) -> dict[int, float]:
        try:
            with open(self.path / f"{PREFIX}{step:08d}" / CURVE) as f:
                return {int(k): float(v) for k, v in json.load(f).items()}
        except (OSError, ValueError):
            return {}

    def _remove(self, step: int) -> None:
        shutil.rmtree(self.path / f"{PREFIX}{step:08d}", ignore_errors=True)

    def load(self, map_location: str = "cpu") -> tuple[Any, int] | None:
        """(state, step) of the checkpoint a retry continues from, or None when the trial has none."""
        step = self.latest()
        if step is None:
            return None
        return _read(self.path / f"{PREFIX}{step:08d}", map_location), step

    def fetch(self, step: int, into: Path) -> Path:
        """A local folder holding the files of the checkpoint of ``step`` (here: its own)."""
        return self.path / f"{PREFIX}{step:08d}"


class BucketCheckpoints(_Checkpoints):
    """The checkpoints of one trial under a prefix of an object store; the same methods, files
    and formats as :class:`CheckpointFolder` (each is staged in a local temporary folder)."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket

    @property
    def path(self) -> str:
        return self.bucket.url

    def steps(self) -> list[int]:
        done = {key[: -len(CURVE) - 1] for key in self.bucket.keys() if key.endswith(f"/{CURVE}")}
        return sorted(s for s in map(_step_of, done) if s is not None)

    def save(self, state: Any, step: int, curve: dict[int, float] | None = None) -> str:
        name = f"{PREFIX}{step:08d}"
        before = self.bucket.keys()
        with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
            _write(state, Path(tmp))
            written = set()
            for file in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                key = f"{name}/{file.relative_to(tmp).as_posix()}"
                self.bucket.write(key, file.read_bytes())
                written.add(key)
        self._write_curve(step, curve or {})  # last: the step is a checkpoint from now on
        written.add(f"{name}/{CURVE}")
        # What an earlier save of this step left, and older saves cut short (no curve.json):
        # from the listing taken before, without listing the bucket again.
        complete = {_step_of(key.split("/")[0]) for key in before if key.endswith(f"/{CURVE}")}
        for key in before:
            old = _step_of(key.split("/")[0])
            if key not in written and (old == step or (old is not None and old < step and old not in complete)):
                self.bucket.remove(key)
        self._drop_before(step)
        return f"{self.bucket.url}/{name}"

    def _write_curve(self, step: int, curve: dict[int, float]) -> None:
        data = json.dumps({str(k): v for k, v in sorted(curve.items())}).encode()
        self.bucket.write(f"{PREFIX}{step:08d}/{CURVE}", data)

    def _raw_curve(self, step: int) -> dict[int, float]:
        data = self.bucket.read(f"{PREFIX}{step:08d}/{CURVE}")
        try:
            return {int(k): float(v) for k, v in json.loads(data or b"{}").items()}
        except ValueError:
            return {}

    def _remove(self, step: int) -> None:
        self.bucket.remove_under(f"{PREFIX}{step:08d}/")

    def load(self, map_location: str = "cpu") -> tuple[Any, int] | None:
        step = self.latest()
        if step is None:
            return None
        # files the objective saved are returned as a path: the local copy outlives this call
        local = self.fetch(step, Path(tempfile.mkdtemp(prefix="hpo-ckpt-")))
        state = _read(local, map_location)
        if not (local / "files").is_dir():
            shutil.rmtree(local, ignore_errors=True)
        return state, step

    def fetch(self, step: int, into: Path) -> Path:
        """Download the files of the checkpoint of ``step`` into the folder ``into``."""
        name = f"{PREFIX}{step:08d}/"
        for key in self.bucket.keys(name):
            target = into / key[len(name):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.bucket.read(key) or b"")
        return into


def open_checkpoints(location: str | os.PathLike[str]) -> CheckpointFolder | BucketCheckpoints:
    """A trial's checkpoints at ``location``: a folder, or an ``s3://`` / ``gs://`` prefix."""
    if isinstance(location, str) and is_object_url(location):
        return BucketCheckpoints(Bucket(location))
    return CheckpointFolder(location)


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
