"""Kept checkpoints published as Optuna study artifacts: listed and downloaded through
optuna-dashboard (the app `hpo dashboard` serves), replaced when the kept set changes, removed
by `hpo delete`; from a folder and from a bucket."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.trial import TrialState

from hpo import api
from hpo.read.dashboard import build_app
from hpo.store.artifacts import artifact_root, study_artifacts
from hpo.store.database import Store
from hpo.store.optuna_adapter import storage_of, study_id_of
from hpo.store.published import artifact_store, publish, published
from workers.buckets import Bucket

from studies import make_spec


def _get(app, path: str) -> tuple[str, bytes]:
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], body


@pytest.fixture(params=["folder", "s3"])
def root(request, tmp_path) -> str:
    return str(tmp_path / "ckpts") if request.param == "folder" else request.getfixturevalue("s3_url")


def test_the_kept_checkpoints_are_study_artifacts_that_the_dashboard_serves(root, tmp_path):
    url = f"sqlite:///{tmp_path}/runs.db"
    spec = make_spec(name="pub", objective="builtin:branin", search_space="branin", sampler="random", n_trials=5,
                     objective_args={"steps": 3, "checkpoints": True}, checkpoints={"path": root, "keep_best": 2})
    assert api.run(spec, storage=url, backend="local").state == "COMPLETED"
    study = optuna.load_study(study_name="pub", storage=url)
    best = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)[:2]
    names = published(study)
    assert sorted(n.split(".")[0] for n in names.values()) == sorted(
        f"checkpoint-trial-{t.number}-step-2" for t in best)

    store = Store(url)
    app = build_app(store, writable=False)
    status, body = _get(app, f"/api/studies/{study_id_of(study)}")
    assert status.startswith("200")
    listed = {a["artifact_id"]: a["filename"] for a in json.loads(body)["artifacts"]}
    assert listed == names
    artifacts = study_artifacts(root, "pub", study_id_of(study))
    for artifact_id, filename in names.items():
        number = int(filename.split("-")[2])
        status, body = _get(app, f"/artifacts/{study_id_of(study)}/{artifact_id}")
        assert status.startswith("200")
        folder = artifacts.checkpoints(number).fetch(2, tmp_path / f"copy-{number}")
        assert body == next(folder.glob("state.*")).read_bytes()  # the checkpoint itself

    assert api.delete("pub", storage=url)
    for artifact_id in names:
        assert _get(build_app(store, writable=False), f"/artifacts/{study_id_of(study)}/{artifact_id}")[0] != "200 OK"
    if root.startswith("s3://"):
        assert Bucket(root).keys() == []
    else:
        assert list(Path(root).iterdir()) == []
    store.dispose()


def test_a_checkpoint_no_longer_kept_is_unpublished_and_its_file_removed(tmp_path):
    """A study resumed later may keep other trials: publishing again makes the published set
    exactly the kept one (optuna-dashboard's own deletion: the file goes, the attribute is null)."""
    url = f"sqlite:///{tmp_path}/runs.db"
    spec = make_spec(name="again", objective="builtin:branin", search_space="branin", sampler="random", n_trials=3,
                     objective_args={"steps": 2, "checkpoints": True}, checkpoints={"keep_best": 2})
    assert api.run(spec, storage=url, backend="local").state == "COMPLETED"
    study = optuna.load_study(study_name="again", storage=url)
    root = artifact_root(Store(url))
    before = published(study)
    assert len(before) == 2
    artifacts = study_artifacts(root, "again", study_id_of(study))
    kept = sorted(artifacts.lineages())
    publish(study, root, {kept[0]: (artifacts.checkpoints(kept[0]), 1)})  # only one is kept now
    after = published(study)
    assert len(after) == 1 and set(after) < set(before)
    (gone,) = set(before) - set(after)
    assert not (Path(root) / gone).exists() and (Path(root) / next(iter(after))).exists()
    with pytest.raises(Exception):
        artifact_store(root).open_reader(gone)
    attrs = storage_of(study).get_study_system_attrs(study_id_of(study))
    assert attrs[f"artifacts:{gone}"] == "null"


def test_a_study_that_keeps_no_checkpoint_publishes_nothing_and_creates_no_folder(tmp_path):
    """Publishing is a no-op for a study with nothing kept: no artifact store is opened (an empty
    artifact folder is not created, nor are the bucket clients imported at every study's end)."""
    url = f"sqlite:///{tmp_path}/none.db"
    study = optuna.create_study(study_name="plain", storage=url)
    root = tmp_path / "artifacts"
    publish(study, str(root), {})
    assert published(study) == {} and not root.exists()


def test_prepare_imports_optuna_artifacts_in_the_background_once(tmp_path):
    """The driver calls ``prepare`` while its last trials run, so the study's end does not wait
    for the import (boto3 and google-cloud-storage come with it where installed)."""
    probe = (
        "import sys, threading, time\n"
        "from hpo.store.published import prepare\n"
        "assert 'optuna.artifacts' not in sys.modules\n"
        "prepare()\n"
        "deadline = time.monotonic() + 60\n"
        "while 'optuna.artifacts' not in sys.modules or not hasattr(sys.modules['optuna.artifacts'], 'upload_artifact'):\n"
        "    assert time.monotonic() < deadline, 'never imported'\n"
        "    time.sleep(0.01)\n"
        "threads = threading.active_count()\n"
        "prepare()\n"
        "assert threading.active_count() <= threads  # no second import thread\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
