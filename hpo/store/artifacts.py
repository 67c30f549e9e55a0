"""The artifact store: where trials' checkpoints live, beside the database, never in it.

A folder or an object store: the spec's ``checkpoints.path`` (a path, or an ``s3://`` / ``gs://``
URL), else ``HPO_ARTIFACTS``, else next to a SQLite store (``hpo.db`` -> ``hpo-artifacts/``),
else (a server database) under hpo's state folder on this machine. On a cluster name a path
that every node mounts, or a bucket. Each study has a folder (a prefix) of its own,
named by study and by its Optuna study id, and in it one folder per lineage (a trial and the
attempts or segments that continue it: ``trial-<number of the first>``). An id can come back (a
study deleted and created again under the same name on SQLite, a database dropped and created
again), so the driver removes, as a study starts, every lineage folder none of its trials wrote
(hpo.run.checkpoints): a new study never resumes an old one's model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from hpo.defaults import ARTIFACTS_VAR, state_dir
from hpo.store.database import Store
from workers.buckets import Bucket, is_object_url
from workers.checkpoints import CURVE, PREFIX, BucketCheckpoints, CheckpointFolder


def artifact_root(store: Store, configured: str | None = None) -> str:
    """Where the store's studies keep checkpoints: a folder's absolute path, or a bucket's URL."""
    explicit = configured or os.environ.get(ARTIFACTS_VAR)
    if explicit:
        return explicit if is_object_url(explicit) else str(Path(explicit).expanduser().resolve())
    db = store.sqlite_path
    if db is not None:
        return str(db.with_name(f"{db.stem}-artifacts"))
    # A server database: one folder per database (its masked URL names it), on this machine.
    return str(state_dir() / "artifacts" / hashlib.sha256(store.masked.encode()).hexdigest()[:12])


def study_artifacts(root: str, study_name: str, study_id: int) -> StudyArtifacts | BucketArtifacts:
    """One study's checkpoints under ``root`` (see :func:`artifact_root`)."""
    if is_object_url(root):
        return BucketArtifacts(Bucket(root), study_name, study_id)
    return StudyArtifacts(Path(root), study_name, study_id)


def _study_folder(study_name: str, study_id: int) -> str:
    return f"{quote(study_name, safe='')}.{study_id}"


class StudyArtifacts:
    """One study's checkpoint folders."""

    def __init__(self, root: Path, study_name: str, study_id: int) -> None:
        self.root = str(root)
        self.folder = root / _study_folder(study_name, study_id)

    def lineage_dir(self, lineage: int) -> Path:
        return self.folder / f"trial-{lineage}"

    def location(self, lineage: int) -> str:
        """What a worker is given to open the lineage's checkpoints."""
        return str(self.lineage_dir(lineage))

    def checkpoints(self, lineage: int) -> CheckpointFolder:
        return CheckpointFolder(self.lineage_dir(lineage))

    def lineages(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(n[6:]) for n in names if n.startswith("trial-") and n[6:].isdigit())

    def remove(self, lineage: int) -> None:
        shutil.rmtree(self.lineage_dir(lineage), ignore_errors=True)

    def copy_latest(self, source: int, target: int) -> int | None:
        """Replace ``target``'s checkpoints with ``source``'s newest (a PBT exploit); its step."""
        step = self.checkpoints(source).latest()
        if step is None:
            return None
        name = f"{PREFIX}{step:08d}"
        staging = self.folder / f".copy-{target}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.lineage_dir(source) / name, staging / name)
        self.remove(target)
        os.replace(staging, self.lineage_dir(target))
        return step

    def remove_all(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class BucketArtifacts:
    """One study's checkpoints in an object store: the same layout as :class:`StudyArtifacts`,
    one prefix per lineage (``trial-<n>/``)."""

    def __init__(self, root: Bucket, study_name: str, study_id: int) -> None:
        self.root = root.url
        self.bucket = root.child(_study_folder(study_name, study_id))

    def location(self, lineage: int) -> str:
        return self.bucket.child(f"trial-{lineage}").url

    def checkpoints(self, lineage: int) -> BucketCheckpoints:
        return BucketCheckpoints(self.bucket.child(f"trial-{lineage}"))

    def lineages(self) -> list[int]:
        names = {key.split("/")[0] for key in self.bucket.keys()}
        return sorted(int(n[6:]) for n in names if n.startswith("trial-") and n[6:].isdigit())

    def remove(self, lineage: int) -> None:
        self.bucket.remove_under(f"trial-{lineage}/")

    def copy_latest(self, source: int, target: int) -> int | None:
        """Replace ``target``'s checkpoints with ``source``'s newest (a PBT exploit); its step."""
        step = self.checkpoints(source).latest()
        if step is None:
            return None
        name = f"{PREFIX}{step:08d}/"
        self.remove(target)
        keys = self.bucket.keys(f"trial-{source}/{name}")
        # the curve last: the copy is a checkpoint only once it is whole
        for key in sorted(keys, key=lambda k: k.endswith(f"/{CURVE}")):
            self.bucket.write(f"trial-{target}/{key.split('/', 1)[1]}", self.bucket.read(key) or b"")
        return step

    def remove_all(self) -> None:
        self.bucket.remove_under()
