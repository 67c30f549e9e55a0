"""Checkpoints in an object store, S3 and GCS (each on a compatible server on loopback, through
Optuna's Boto3ArtifactStore and GCSArtifactStore): the worker-side checkpoints, a study's
prefixes, resume after a worker death, the keep policy, and URLs refused before anything is
written."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from optuna.trial import TrialState

from hpo import api
from hpo.errors import HpoError
from hpo.run.checkpoints import CheckpointKeeper
from hpo.run.driver import StudyDriver
from hpo.run.local_backend import LocalBackend
from hpo.spec.study import load_spec
from hpo.store.artifacts import BucketArtifacts, artifact_root, study_artifacts
from hpo.store.jobs import JobState
from hpo.store.optuna_adapter import study_id_of
from workers.buckets import Bucket, check_url
from workers.checkpoints import BucketCheckpoints, open_checkpoints

from studies import make_spec, new_study

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def test_bucket_checkpoints_keep_only_the_newest_and_read_back_each_kind(bucket_url, tmp_path):
    checkpoints = open_checkpoints(bucket_url)
    assert isinstance(checkpoints, BucketCheckpoints) and checkpoints.load() is None
    checkpoints.save({"w": [1, 2]}, step=0, curve={0: 0.5})
    checkpoints.save({"w": [3]}, step=3, curve={0: 0.5, 3: 0.25})
    assert checkpoints.steps() == [3]
    assert checkpoints.load() == ({"w": [3]}, 3)
    assert checkpoints.curve(3) == {0: 0.5, 3: 0.25}
    checkpoints.record_curve(3, {0: 0.5, 3: 0.25, 4: 0.125})
    assert checkpoints.curve(3) == {0: 0.5, 3: 0.25}  # a later value settles it, but is not its curve
    checkpoints.save(b"\x00raw", step=4)  # not reported yet: the settled step 3 stays for a retry
    assert checkpoints.steps() == [3, 4] and checkpoints.latest() == 3
    checkpoints.record_curve(4, {0: 0.5, 3: 0.25, 4: 0.125})
    assert checkpoints.steps() == [4] and checkpoints.load() == (b"\x00raw", 4)
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "sub" / "weights.bin").write_bytes(b"big")
    checkpoints.save(model, step=5, curve={5: 0.1})
    loaded, step = checkpoints.load()
    assert step == 5 and loaded.name == "model" and (loaded / "sub" / "weights.bin").read_bytes() == b"big"
    assert Bucket(bucket_url).keys() == ["step-00000005/curve.json", "step-00000005/files/model/sub/weights.bin"]


def test_a_step_whose_curve_was_never_written_is_not_a_checkpoint(bucket_url):
    """The curve is written last: a save cut short (the worker died) leaves the previous one."""
    checkpoints = open_checkpoints(bucket_url)
    checkpoints.save({"epoch": 1}, step=1)
    Bucket(bucket_url).write("step-00000002/state.pkl", b"half a checkpoint")
    assert checkpoints.latest() == 1 and checkpoints.load() == ({"epoch": 1}, 1)
    checkpoints.save({"epoch": 3}, step=3)  # the next save removes the leftover
    curve, state = Bucket(bucket_url).keys()  # state.pt when torch is loaded in this process, else .pkl
    assert curve == "step-00000003/curve.json" and state.startswith("step-00000003/state.p")


def test_a_study_s_prefixes_list_copy_and_remove_per_lineage(bucket_url):
    artifacts = study_artifacts(bucket_url, "my-study", 7)
    assert isinstance(artifacts, BucketArtifacts)
    where = urlsplit(artifacts.location(1))
    assert where.path == urlsplit(bucket_url).path + "/my-study.7/trial-1"
    assert where.query == urlsplit(bucket_url).query  # an S3 endpoint goes with it
    for lineage in (1, 10):
        artifacts.checkpoints(lineage).save({"who": lineage}, step=lineage, curve={lineage: 1.0})
    assert artifacts.lineages() == [1, 10]
    assert artifacts.copy_latest(10, 1) == 10  # a PBT exploit: member 1 continues 10's model
    assert artifacts.checkpoints(1).load() == ({"who": 10}, 10) and artifacts.checkpoints(1).curve(10) == {10: 1.0}
    assert artifacts.copy_latest(5, 1) is None  # nothing to copy
    artifacts.remove(10)
    assert artifacts.lineages() == [1]
    other = study_artifacts(bucket_url, "my-study", 8)  # the same name created again: its own prefix
    other.checkpoints(0).save({}, step=0)
    artifacts.remove_all()
    assert artifacts.lineages() == [] and other.lineages() == [0]


def _epochs(workdir):
    return [tuple(map(int, line.split())) for line in (workdir / "epochs.log").read_text().splitlines()]


def test_a_worker_killed_mid_trial_resumes_from_the_bucket_and_only_the_best_is_kept(store, bucket_url, tmp_path):
    spec = make_spec(objective="objectives:checkpointed", search_space=X, n_trials=3, max_concurrent_trials=1,
                     objective_args={"workdir": str(tmp_path), "epochs": 5, "die_after": 3},
                     checkpoints={"path": bucket_url, "keep_best": 1})
    study = new_study(store, spec)
    artifacts = study_artifacts(artifact_root(store, spec.checkpoints.path), spec.name, study_id_of(study))
    keeper = CheckpointKeeper(artifacts, 1, spec.study_directions)
    driver = StudyDriver(study, spec, poll_interval=0.1, backend=LocalBackend(cpus=2), checkpoints=keeper)
    assert driver.run().state == JobState.COMPLETED
    first, retry = study.trials[:2]
    assert first.state == TrialState.FAIL and retry.user_attrs["hpo:retry_of"] == 0
    assert [e for t, e in _epochs(tmp_path) if t in (0, 1)] == [0, 1, 2, 3, 4]  # 4 not retrained from 0
    assert retry.user_attrs["hpo:run"]["resumed_steps"] == 4
    assert sorted(retry.intermediate_values) == list(range(5))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    assert artifacts.lineages() == [best.user_attrs.get("hpo:lineage", best.number)]


def test_hpo_run_with_a_bucket_and_delete_removes_the_study_s_prefix(bucket_url, tmp_path):
    url = f"sqlite:///{tmp_path}/runs.db"
    spec = make_spec(name="inbucket", objective="builtin:branin", search_space="branin", sampler="random",
                     n_trials=3, objective_args={"steps": 3, "checkpoints": True}, checkpoints={"path": bucket_url})
    summary = api.run(spec, storage=url, backend="local")
    assert summary.state == "COMPLETED"
    keys = Bucket(bucket_url).keys()
    in_study = [k for k in keys if "/" in k]
    assert in_study and {k.split("/")[1] for k in in_study} == {f"trial-{summary.best_trial}"}
    assert len(set(keys) - set(in_study)) == 1  # the kept one, published as a study artifact
    assert not (tmp_path / "runs-artifacts").exists()  # nothing beside the database
    assert api.delete("inbucket", storage=url)
    assert Bucket(bucket_url).keys() == []


@pytest.mark.parametrize("url, expected", [
    ("ftp://host/x", "only s3://, gs:// URLs"),
    ("s3:///prefix", "names no bucket"),
    ("s3://key:secret@bucket/x", "holds credentials"),
    ("s3://bucket/x?endpoint=http://h", "unknown option 'endpoint'"),
])
def test_a_bad_object_store_url_is_refused_naming_the_problem(url, expected, tmp_path):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        check_url(url)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: s\nobjective: builtin:branin\nsearch_space: branin\ncheckpoints: {{path: '{url}'}}\n")
    with pytest.raises(HpoError, match="field 'checkpoints.path'") as refused:
        load_spec(spec)
    assert expected in str(refused.value) and "secret" not in str(refused.value)


def test_a_bucket_that_cannot_be_used_is_refused_before_anything_is_written(s3_url, tmp_path):
    missing = s3_url.replace("s3://hpo-test/", "s3://no-such-bucket/")
    spec = make_spec(name="nobucket", objective="builtin:branin", search_space="branin", n_trials=1,
                     checkpoints={"path": missing})
    with pytest.raises(HpoError, match=r"checkpoints: s3://no-such-bucket/\w+ cannot be used: NoSuchBucket"):
        api.run(spec, storage=f"sqlite:///{tmp_path}/runs.db", backend="local")
    assert not (tmp_path / "runs.db").exists()
