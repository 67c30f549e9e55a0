"""hpo.run.ray_adapter: the one module that touches Ray's internals, its version gate, and Ray's
own GPU detection asked before a local runtime starts."""

from __future__ import annotations

import re
import tomllib

from hpo.run import ray_adapter

from conftest import REPO


def test_only_the_adapter_touches_rays_internals():
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for folder in ("hpo", "workers") for path in sorted((REPO / folder).rglob("*.py"))
        if path.name != "ray_adapter.py"
        for number, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\bray\._", line)
    ]
    assert offenders == []


def test_rays_upper_bound_is_the_newest_release_tested():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    newest = max(ray_adapter.TESTED_RAY)
    bound = f"<{newest[0]}.{newest[1] + 1}"
    ray_deps = [d for d in project["dependencies"] + project["optional-dependencies"]["bench"] if d.startswith("ray[")]
    assert len(ray_deps) == 2 and all(d.replace(" ", "").endswith(bound) for d in ray_deps)
    assert ray_adapter.ray_version() in ray_adapter.TESTED_RAY  # CI runs on a tested release


def test_local_gpus_is_what_a_new_local_ray_runtime_would_have(monkeypatch):
    monkeypatch.delenv("RAY_OVERRIDE_RESOURCES", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert ray_adapter.local_gpus() == 0  # none visible, whatever the hardware
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", '{"GPU": 3}')  # what Ray's autoscaler sets on a node
    assert ray_adapter.local_gpus() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # Ray refuses to start with 3 GPUs and one visible
    assert ray_adapter.local_gpus() is None


def test_an_untested_ray_release_is_not_asked(monkeypatch):
    monkeypatch.setattr(ray_adapter, "TESTED_RAY", ((2, 0),))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert ray_adapter.local_gpus() is None  # hpo then starts Ray and asks the runtime
