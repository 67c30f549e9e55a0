"""The artifact store: where trials' checkpoints live, beside the database, never in it.

A folder: the spec's ``checkpoints.path``, else ``HPO_ARTIFACTS``, else next to a SQLite store
(``hpo.db`` -> ``hpo-artifacts/``), else (a server database) under hpo's state folder on this
machine. On a cluster name a path that every node mounts. Each study has a folder of its own,
named by study and by its Optuna study id (a study deleted and created again under the same
name never sees the old one's checkpoints), and in it one folder per lineage (a trial and the
attempts or segments that continue it: ``trial-<number of the first>``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from hpo.defaults import ARTIFACTS_VAR, state_dir
from hpo.store.database import Store
from workers.checkpoints import PREFIX, CheckpointFolder


def artifact_root(store: Store, configured: str | None = None) -> Path:
    explicit = configured or os.environ.get(ARTIFACTS_VAR)
    if explicit:
        return Path(explicit).expanduser().resolve()
    db = store.sqlite_path
    if db is not None:
        return db.with_name(f"{db.stem}-artifacts")
    # A server database: one folder per database (its masked URL names it), on this machine.
    return state_dir() / "artifacts" / hashlib.sha256(store.masked.encode()).hexdigest()[:12]


class StudyArtifacts:
    """One study's checkpoint folders."""

    def __init__(self, root: Path, study_name: str, study_id: int) -> None:
        self.folder = root / f"{quote(study_name, safe='')}.{study_id}"

    def lineage_dir(self, lineage: int) -> Path:
        return self.folder / f"trial-{lineage}"

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
