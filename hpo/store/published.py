"""The checkpoints a finished study keeps, published as Optuna study artifacts.

optuna-dashboard lists a study's artifacts (system attributes ``artifacts:<id>``, written by
``optuna.artifacts.upload_artifact``) and downloads them from an artifact store by id. When a
study ends, each kept checkpoint (its ``keep_best`` best trials) is uploaded to the root of the
study's artifact store under a fresh id, named ``checkpoint-trial-<n>-step-<s>.<pt|pkl|bin>``
(an objective's saved files as ``.tar.gz``); one that the study no longer keeps (a resumed study
found better trials) is removed and its attribute set to null, as optuna-dashboard itself
deletes an artifact. `hpo dashboard` serves every artifact root of the store's studies.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

import optuna

from hpo.store.optuna_adapter import storage_of, study_id_of
from workers.buckets import Bucket, is_object_url
from workers.checkpoints import BucketCheckpoints, CheckpointFolder

log = logging.getLogger("hpo.store.published")

ATTR_PREFIX = "artifacts:"  # optuna.artifacts' key for a study's artifacts
NAME_PREFIX = "checkpoint-trial-"

# optuna.artifacts is imported where it is used: importing it imports boto3 and
# google-cloud-storage where installed (a third of a second), which no CLI verb that reads a
# study needs.


def prepare() -> None:
    """Import optuna.artifacts on a background thread, so that publishing at a study's end does
    not wait for it; the driver calls this once a slot is idle with nothing left to run (its
    last trials), when a CPU is free. A failed import is left to the publish to report."""
    if "optuna.artifacts" in sys.modules:
        return

    def load() -> None:
        try:
            importlib.import_module("optuna.artifacts")
        except Exception:  # noqa: BLE001 - publish imports it again and says why
            pass

    threading.Thread(target=load, name="hpo-publish-import", daemon=True).start()


def _not_found() -> type[Exception]:
    from optuna.artifacts.exceptions import ArtifactNotFound

    return ArtifactNotFound


def artifact_store(root: str, create: bool = True) -> Any:
    """Optuna's artifact store over an artifact root (a folder, or a bucket's prefix)."""
    if is_object_url(root):
        return Bucket(root)
    if create:
        Path(root).mkdir(parents=True, exist_ok=True)
    from optuna.artifacts import FileSystemArtifactStore

    return FileSystemArtifactStore(root)


class ArtifactRoots:
    """One Optuna artifact store over the roots of several studies (optuna-dashboard takes one
    for a whole store): an artifact is read from, and removed in, whichever root holds it;
    what the dashboard uploads goes to the first."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = list(dict.fromkeys(roots))

    def open_reader(self, artifact_id: str) -> BinaryIO:
        not_found = _not_found()
        for root in self.roots:
            try:
                reader: BinaryIO = artifact_store(root, create=False).open_reader(artifact_id)
                return reader
            except not_found:
                continue
        raise not_found(f"no artifact {artifact_id!r} in the store's artifact roots")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        artifact_store(self.roots[0]).write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        not_found = _not_found()
        for root in self.roots:
            try:
                artifact_store(root, create=False).remove(artifact_id)
            except (not_found, FileNotFoundError):
                continue


def published(study: optuna.Study) -> dict[str, str]:
    """The study's published checkpoints: artifact id -> file name."""
    attrs = storage_of(study).get_study_system_attrs(study_id_of(study))
    found = {}
    for key, value in attrs.items():
        meta = json.loads(value) if key.startswith(ATTR_PREFIX) and isinstance(value, str) else None
        if isinstance(meta, dict) and str(meta.get("filename", "")).startswith(NAME_PREFIX):
            found[key[len(ATTR_PREFIX):]] = meta["filename"]
    return found


def _stem(number: int, step: int) -> str:
    return f"{NAME_PREFIX}{number}-step-{step}"


def publish(study: optuna.Study, root: str, wanted: dict[int, tuple[CheckpointFolder | BucketCheckpoints, int]]) -> None:
    """Make the published checkpoints those of ``wanted`` (trial number -> (its checkpoints,
    step)): upload what is missing, remove what is no longer wanted. Nothing to do (a study that
    keeps no checkpoint) opens no artifact store."""
    have = published(study)
    stems = {_stem(n, step) for n, (_, step) in wanted.items()}
    stale = [artifact_id for artifact_id, filename in have.items() if filename.split(".")[0] not in stems]
    names = {filename.split(".")[0] for filename in have.values()}
    missing = [(number, pair) for number, pair in sorted(wanted.items()) if _stem(number, pair[1]) not in names]
    if not stale and not missing:
        return
    store = artifact_store(root)
    for artifact_id in stale:
        unpublish(study, store, artifact_id)
    for number, (checkpoints, step) in missing:
        _upload(study, store, checkpoints, number, step)


def _upload(study: optuna.Study, store: Any, checkpoints: CheckpointFolder | BucketCheckpoints, number: int,
            step: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hpo-publish-") as tmp:
        folder = checkpoints.fetch(step, Path(tmp) / "checkpoint")
        states = sorted(folder.glob("state.*"))
        stem = Path(tmp) / _stem(number, step)
        if states:
            file = stem.with_name(stem.name + states[0].suffix)
            shutil.copyfile(states[0], file)
        elif (folder / "files").is_dir():
            file = Path(shutil.make_archive(str(stem), "gztar", folder / "files"))
        else:
            return
        from optuna.artifacts import upload_artifact

        upload_artifact(artifact_store=store, file_path=str(file), study_or_trial=study)


def unpublish(study: optuna.Study, store: Any, artifact_id: str) -> None:
    try:
        store.remove(artifact_id)
    except (_not_found(), FileNotFoundError):
        pass
    storage_of(study).set_study_system_attr(study_id_of(study), ATTR_PREFIX + artifact_id, json.dumps(None))


def unpublish_all(study: optuna.Study, root: str) -> int:
    """Remove every published checkpoint of the study (`hpo delete`); how many."""
    ids = list(published(study))
    if ids:
        store = artifact_store(root)
        for artifact_id in ids:
            unpublish(study, store, artifact_id)
    return len(ids)
